"""The worker's liveness and readiness: ``GET /healthz`` and ``GET /readyz`` on its web port.

- ``/healthz`` (liveness) answers 200 whenever the event loop runs the handler: it reads nothing
  and calls nothing, so a slow broker never makes Kubernetes restart a healthy worker. A worker
  whose loop is stuck does not answer at all, and the probe's timeout restarts it.
- ``/readyz`` (readiness) answers 200 once the worker does its job, else 503; the JSON body says
  why not, check by check:

  ``topics``      the worker created or found its topics (``ensure_topics`` at start);
  ``feeds``       the tenants, suppressions and customer-status topics were read to their end
                  (a worker judging events against a half-read tenant list would dead-letter them);
  ``assigned``    the consumer group gave this worker its partitions and no rebalance is under way
                  (an empty assignment is ready: more workers than partitions is not a fault);
  ``restored``    every table partition it holds was restored from its changelog.

  Readiness reads only what the worker already knows (``streams/runtime/status.py``), so a probe
  every second costs a few dictionary reads.

Which probe uses which (``deploy/helm/tidings``): the liveness probe ``/healthz``; the readiness
probe ``/readyz`` (a StatefulSet rolls to the next pod only once this one is ready, so a rollout
never takes two workers' partitions into restore at once).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.runtime.status import WorkerView

if TYPE_CHECKING:
    from streams.runtime.app import Wiring

JSON = "application/json"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]
    checks: dict[str, Any] = field(default_factory=dict)

    def body(self) -> str:
        return json.dumps({"status": "ready" if self.ready else "not ready", "reasons": list(self.reasons),
                           "checks": self.checks}, sort_keys=True)


def judge(*, topics_ready: bool, feeds: Mapping[str, bool], assigned: bool, view: WorkerView) -> Readiness:
    """Ready or not, and each reason why not, from what the worker knows. Pure."""
    reasons = []
    if not topics_ready:
        reasons.append("topics: not yet created or found")
    behind = sorted(name for name, caught_up in feeds.items() if not caught_up)
    if behind:
        reasons.append(f"feeds: not read to their end yet: {', '.join(behind)}")
    # Faust marks the app rebalancing from the revocation until its recovery ends, so a restore
    # is part of the rebalance; it is named apart because it is the part that can take minutes.
    if not view.consumer_started:
        reasons.append("assigned: the consumer has not started")
    elif not assigned or (view.rebalancing and view.tables_restored):
        reasons.append("assigned: a rebalance is under way")
    elif not view.tables_restored or view.rebalancing:
        remaining = sum(r.remaining for r in view.restoring)
        reasons.append(f"restored: tables restoring from their changelogs, {remaining} rows to go")
    partitions_ok = view.consumer_started and assigned and not (view.rebalancing and view.tables_restored)
    return Readiness(
        ready=not reasons,
        reasons=tuple(reasons),
        checks={
            "topics": topics_ready,
            "feeds": dict(sorted(feeds.items())),
            "assigned": partitions_ok,
            "partitions": len(view.assignment),
            "restored": partitions_ok and view.tables_restored and not view.rebalancing,
        },
    )


class Health:
    """The state readiness needs that Faust does not keep: topics made, assignment received."""

    def __init__(self, view: Callable[[], WorkerView], feeds: Mapping[str, Callable[[], bool]]) -> None:
        self._view = view
        self._feeds = feeds
        self.topics_ready = False
        self.assigned = False

    def on_assigned(self, assignment: object) -> None:
        self.assigned = True

    def on_revoked(self) -> None:
        self.assigned = False

    def readiness(self) -> Readiness:
        return judge(
            topics_ready=self.topics_ready,
            feeds={name: caught_up() for name, caught_up in self._feeds.items()},
            assigned=self.assigned,
            view=self._view(),
        )

    async def healthz(self) -> tuple[int, str, str]:
        return 200, JSON, '{"status": "alive"}'

    async def readyz(self) -> tuple[int, str, str]:
        readiness = self.readiness()
        return (200 if readiness.ready else 503), JSON, readiness.body()


def caught_up(feed: Any) -> Callable[[], bool]:
    """``feed.caught_up`` read when asked (a ``TopicFollower``: ``streams/compacted.py``)."""
    return lambda: bool(feed.caught_up)


def register(wiring: Wiring, feeds: Mapping[str, Callable[[], bool]]) -> Health:
    """Serve ``/healthz`` and ``/readyz``; the caller sets ``topics_ready`` once its topics exist."""
    health = Health(wiring.status, feeds)
    wiring.on_assigned(health.on_assigned)
    wiring.on_revoked(health.on_revoked)
    wiring.page("/healthz", get=health.healthz, name="tidings.healthz")
    wiring.page("/readyz", get=health.readyz, name="tidings.readyz")
    return health

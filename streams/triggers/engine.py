"""The timed-trigger engine: entity state in, timers kept, due timers fired as firing records.

Three entry points, each called by one agent inside that agent's exactly-once transaction, on
the partition of the record it processes (see ``streams/topics.py``):

- ``on_event``: an inbound event updates the state of the entities it feeds (``state/``), and the
  entity's timers are planned again from that state (``timers.plan``): a moved date moves the
  timer, a cancelled booking loses it (DESIGN invariant 2);
- ``on_tick``: the due timers of a partition, found through the ``TimerIndex`` (cost grows with
  the number due, not pending), are revalidated against the current state and tenant, judged by
  the missed-time policy (``schedule.lateness``), and turned into *firing* records; the timers
  table records what fired (``done``) and the next timers. Rendering happens downstream, from the
  firings topic, so a tick that finds ten thousand due timers decides them in well under a
  second instead of rendering ten thousand mails first;
- ``render_firings``: a firing record becomes its mails (``firing.py`` + the ``Renderer``).

The engine works on plain mutable mappings of ``str -> bytes`` (the Faust tables in a worker,
dicts in unit tests), so it has no Kafka in it. Keys: entity state ``<tenant>/<entity id>`` in
the entity's table ``<pack>.<entity>``; timers ``<pack>.<entity>/<tenant>/<entity id>`` in the
one ``timers`` table, whose value is ``{"timers": [[due, slot, occurrence, step], ...],
"done": {slot: occurrence}}``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.domain import schedule
from streams.domain.customers import InactiveCustomers
from streams.domain.evaluate import field_at
from streams.domain.projection import apply, public
from streams.domain.rules import Catalog, TimedRule, Trigger
from streams.domain.status import firing_fields
from streams.domain.tenants import Tenant, TenantDirectory
from streams.domain.timers import Timer, plan, plan_trigger
from streams.errors import ConfigurationError, InvalidEvent, RejectedInput, UnknownTenant
from streams.metrics import Metrics, Series, observe_many
from streams.rendering.render import Rendered, Renderer, Source
from streams.state import values
from streams.triggers.firing import timed_context, timed_firings
from streams.triggers.index import TimerIndex

log = logging.getLogger(__name__)

Store = MutableMapping[str, bytes]
_EPSILON = dt.timedelta(microseconds=1)


@dataclass
class Fired:
    """What one tick decided on one partition."""

    firings: list[dict[str, Any]] = field(default_factory=list)
    states: list[bytes] = field(default_factory=list)  # each firing's entity state as stored (``firings_value``)
    skipped: int = 0
    entities: int = 0  # how many entities with due timers were looked at


@dataclass
class FiringOutcome:
    mails: list[Rendered] = field(default_factory=list)
    rejections: list[tuple[str, RejectedInput]] = field(default_factory=list)  # (message id or "", error)
    # Not rendered: the recipient is an inactive customer (status fields, ``streams/customers/``).
    skipped: list[dict[str, Any]] = field(default_factory=list)


def timers_key(table: str, tenant_id: str, entity_id: str) -> str:
    return f"{table}/{tenant_id}/{entity_id}"


def split_timers_key(key: str) -> tuple[str, str, str]:
    table, tenant_id, entity_id = key.split("/", 2)
    return table, tenant_id, entity_id


class TimedEngine:
    def __init__(
        self,
        catalog: Catalog,
        tenants: TenantDirectory,
        renderer: Renderer,
        metrics: Metrics,
        index: TimerIndex | None = None,
        *,
        max_fires_per_tick: int = 10_000,
        inactive: InactiveCustomers | None = None,
    ) -> None:
        self.catalog = catalog
        self.tenants = tenants
        self.renderer = renderer
        self.metrics = metrics
        self.index = index if index is not None else TimerIndex()
        self.max_fires_per_tick = max_fires_per_tick
        self.inactive = inactive if inactive is not None else InactiveCustomers()
        self._triggers = {t.key: t for t in catalog.timed_triggers()}
        self._entity_updates = Series(metrics.entity_updates)
        self._graces: dict[str, dt.timedelta] = {}

    # -- events ---------------------------------------------------------------------------------

    def feeds(self, type_name: str) -> bool:
        return bool(self.catalog.feeds(type_name))

    def on_event(
        self,
        states: Mapping[str, Store],
        timers: Store,
        partition: int,
        type_name: str,
        record: Mapping[str, Any],
        tenant: Tenant,
    ) -> None:
        """Apply an event to the entities it feeds and plan their timers again.

        Everything is computed before anything is written, so an event that fails (a state field
        of the wrong type for a rule) changes nothing and is dead-lettered by the caller.
        """
        occurred_at = field_at(record, "envelope.occurred_at")
        writes: list[tuple[Store, str, bytes | None]] = []
        index_updates: list[tuple[str, float | None]] = []
        for table, spec in self.catalog.feeds(type_name):
            entity_id = str(field_at(record, spec.id))
            key = f"{tenant.tenant_id}/{entity_id}"
            store = states[table]
            old = values.loads(store.get(key))
            new = apply(old, type_name, record, spec, tenant_id=tenant.tenant_id, entity_id=entity_id, occurred_at=occurred_at)
            if new is None and old is None:
                continue
            if new != old:
                writes.append((store, key, None if new is None else values.dumps(new)))
                self._entity_updates(table, "forgotten" if new is None else "updated").inc()
            tkey = timers_key(table, tenant.tenant_id, entity_id)
            entry = _entry(timers.get(tkey))
            planned = [] if new is None else self._plan(table, new, tenant, entry["done"], occurred_at)
            new_entry = {"timers": [t.to_json() for t in planned], "done": entry["done"] if new is not None else {}}
            if new_entry != entry:
                empty = not new_entry["timers"] and not new_entry["done"]
                writes.append((timers, tkey, None if empty else _dump_entry(new_entry)))
            index_updates.append((tkey, min((t[0] for t in new_entry["timers"]), default=None)))  # to_json's due.timestamp()
        for store, key, value in writes:
            if value is None:
                if store.get(key) is not None:
                    del store[key]
            else:
                store[key] = value
        for tkey, due in index_updates:
            self.index.set(partition, tkey, due)

    def _plan(self, table: str, state: Mapping[str, Any], tenant: Tenant, done: Mapping[str, str], now: dt.datetime) -> list[Timer]:
        try:
            return plan(self.catalog.timed_for(table), state, tenant, done, now)
        except (ConfigurationError, TypeError, ValueError, ArithmeticError) as e:
            # ArithmeticError: a date pushed past year 9999 by a tenant's "x days" (OverflowError).
            raise InvalidEvent(f"the {table} state does not fit its timed triggers: {type(e).__name__}: {e}", reason="bad_state") from None

    # -- ticks ----------------------------------------------------------------------------------

    def rebuild(self, partition: int, items: Iterable[tuple[str, bytes]]) -> int:
        """Rebuild one partition's index from its ``timers`` table rows, at once."""
        return self.index.rebuild(partition, _earliest(items))

    async def build(self, partition: int, items: Iterable[tuple[str, bytes]]) -> int | None:
        """Rebuild one partition's index from its ``timers`` table rows, yielding to the event
        loop between slices (``TimerIndex.build``: None if it was abandoned)."""
        return await self.index.build(partition, _earliest(items))

    def on_tick(
        self, states: Mapping[str, Store], timers: Store, partition: int, now: dt.datetime, limit: int | None = None
    ) -> Fired:
        """Fire what is due on this partition at ``now``: firing records out, timers table updated.

        At most ``limit`` entities (default ``max_fires_per_tick``), earliest due first; the agent
        calls again while ``Fired.entities`` reaches the limit, writing each chunk's firings as
        it goes.
        """
        out = Fired()
        now_ts = now.timestamp()
        keys = self.index.pop_due(partition, now_ts, limit or self.max_fires_per_tick)
        out.entities = len(keys)
        # Counted per chunk, not per timer: a labelled counter costs more than deciding a timer.
        fired: Counter[tuple[str, str]] = Counter()
        skipped: Counter[tuple[str, str, str]] = Counter()
        lags: Counter[float] = Counter()  # a wave's timers share a due time, hence a lag
        # The chunk's rows in one read per table (RocksDB's multi-get on a worker): the keys are
        # distinct entities and the loop writes only their timers rows, so nothing read here
        # changes before it is used.
        parts = [split_timers_key(tkey) for tkey in keys]
        raws = _get_many(timers, keys)
        raw_states = _states_of(states, parts)
        for tkey, raw, (table, tenant_id, entity_id), raw_state in zip(keys, raws, parts, raw_states, strict=True):
            entry = _entry(raw)
            tenant = self.tenants.get(tenant_id)
            # Stored timers stay JSON lists; only the due ones become ``Timer``s. The index
            # compares the same float epoch seconds, so "due" means the same thing to both.
            due_json = [t for t in entry["timers"] if t[0] <= now_ts]
            keep_json = [t for t in entry["timers"] if t[0] > now_ts]  # planned from the current state already
            if tenant is None or raw_state is None:
                # The tenant was removed or the entity forgotten since: nothing of it may fire.
                for t in due_json:
                    skipped[(tenant_id, t[1].split("#", 1)[0], "invalid")] += 1
                if raw is not None:
                    del timers[tkey]
                continue
            state = values.loads(raw_state)
            done = dict(entry["done"])
            fields = public(state)
            keep: list[Timer] = []
            due = [Timer.from_json(t) for t in due_json]
            if len(due) > 1:
                due.sort()
            for timer in due:
                trigger = self._triggers.get(timer.trigger_key)
                current = self._revalidate(trigger, timer, fields, tenant, done)
                if trigger is None or current is None:
                    skipped[(tenant_id, timer.trigger_key, "invalid")] += 1
                    continue
                if current.due > now:
                    keep.append(current)  # the tenant moved it later (a new "x days")
                    continue
                done[current.slot] = current.occurrence
                rule = trigger.rule
                assert isinstance(rule, TimedRule)
                if rule.kind == "recurring":
                    keep += self._plan_trigger(trigger, fields, tenant, done, now)  # next week's
                # Judged by the due time the timer was planned for: a tenant who lengthens
                # "3 days before" to "10" after it was planned still gets the 3-day mail out.
                if schedule.lateness(timer.due, now, self._grace(trigger)) == "late":
                    skipped[(tenant_id, current.trigger_key, "late")] += 1
                    continue
                out.firings.append(
                    {
                        "table": table,
                        "tenant_id": tenant_id,
                        "entity_id": entity_id,
                        "timer": current.to_json(),
                        "fired_at": now,
                        "state": state,
                    }
                )
                out.states.append(raw_state)
                fired[(tenant_id, trigger.key)] += 1
                lags[max(0.0, now_ts - timer.due.timestamp())] += 1
            remaining = keep_json + [t.to_json() for t in keep]
            if not remaining and not done:
                if raw is not None:
                    del timers[tkey]
            else:
                timers[tkey] = _dump_entry({"timers": remaining, "done": done})
            self.index.set(partition, tkey, min((t[0] for t in remaining), default=None))
        for (tenant_id, trigger_key), n in fired.items():
            self.metrics.timers_fired.labels(tenant_id, trigger_key).inc(n)
        for lag, n in lags.items():
            observe_many(self.metrics.timer_fire_lag_seconds, lag, n)
        for (tenant_id, trigger_key, reason), n in skipped.items():
            self.metrics.timers_skipped.labels(tenant_id, trigger_key, reason).inc(n)
        out.skipped = sum(skipped.values())
        return out

    def _grace(self, trigger: Trigger) -> dt.timedelta:
        grace = self._graces.get(trigger.key)
        if grace is None:
            rule = trigger.rule
            assert isinstance(rule, TimedRule)
            grace = self._graces[trigger.key] = _span(rule.grace)
        return grace

    def _revalidate(
        self, trigger: Trigger | None, timer: Timer, fields: Mapping[str, Any], tenant: Tenant, done: Mapping[str, str]
    ) -> Timer | None:
        """The timer for this slot that the current state and tenant plan, if it is still this one.

        Only the timer's own trigger is planned again (the entity's other timers were planned
        from this same state when it last changed); "as of" just before the timer's due time,
        so that a recurring trigger's next occurrence is this one and not next week's.
        """
        if trigger is None:
            return None
        for candidate in self._plan_trigger(trigger, fields, tenant, done, timer.due - _EPSILON, timer.slot):
            if candidate.slot == timer.slot and candidate.occurrence == timer.occurrence:
                return candidate
        return None

    def _plan_trigger(
        self,
        trigger: Trigger,
        fields: Mapping[str, Any],
        tenant: Tenant,
        done: Mapping[str, str],
        now: dt.datetime,
        only_slot: str | None = None,
    ) -> list[Timer]:
        try:
            return plan_trigger(trigger, fields, tenant, done, now, only_slot)
        except Exception as e:
            # Cannot happen for a state that was planned on ingest, unless the packs or the
            # tenant changed under it (a tenant's "x days" so large the date overflows); keeping
            # the timer would retry forever, so it is dropped and logged. Whatever the cause, it
            # must not escape: the chunk's other timers, other tenants' among them, were already
            # taken from the index and would be lost with it.
            log.error("timers of %s for tenant %s dropped: %s", trigger.key, tenant.tenant_id, type(e).__name__)
            self.metrics.timers_skipped.labels(tenant.tenant_id, trigger.key, "unplannable").inc()
            return []

    # -- firings --------------------------------------------------------------------------------

    def render_firing(self, firing: Mapping[str, Any], source_topic: str) -> FiringOutcome:
        """A firing record's mails, rendered with the tenant as it is now."""
        out = FiringOutcome()
        timer = Timer.from_json(firing["timer"])
        tenant = self.tenants.get(firing["tenant_id"])
        trigger = self._triggers.get(timer.trigger_key)
        if tenant is None or trigger is None:
            what = "tenant" if tenant is None else "trigger"
            out.rejections.append(("", UnknownTenant(f"{what} of firing {timer.slot} is gone")))
            return out
        state = firing["state"]
        table = firing["table"]
        context = timed_context(trigger, timer, state, tenant, self.catalog.entity(table).fields())
        source = Source(
            topic=source_topic,
            event_id=f"timer:{timer.slot}:{timer.occurrence}",
            timestamp=timer.due,  # so the mail's latency metric counts from the due time
        )
        # The timer stays planned (it fired); only the mails to an inactive customer are skipped.
        firings, skipped = self.inactive.partition(tenant.tenant_id, timed_firings(trigger, timer, state, tenant, firing["entity_id"]))
        out.skipped = [firing_fields(f, tenant.tenant_id, source.event_id) for f in skipped]
        for f in firings:
            try:
                out.mails.append(self.renderer.render(f, tenant, context, source, firing["fired_at"]))
            except RejectedInput as e:
                out.rejections.append((f.message_id, e))
        return out


def firings_value(fired: Fired, decided_at: float) -> bytes:
    """A firings record: ``{"firings": [...], "decided_at": ...}``, as ``values.dumps`` would write it.

    Each firing carries its entity state, which is already JSON in the entity table: its stored
    bytes are spliced in instead of encoding the state again, the largest part of the record.
    """
    parts = [
        _dump_firing({k: v for k, v in firing.items() if k != "state"})[:-1] + b',"state":' + raw + b"}"
        for firing, raw in zip(fired.firings, fired.states, strict=True)
    ]
    return b'{"firings":[' + b",".join(parts) + b'],"decided_at":' + orjson.dumps(decided_at) + b"}"


# A timers entry is plain JSON (epoch floats, slot and occurrence strings, step numbers), and so is
# a firing apart from its state and instants: orjson writes and reads these several times faster
# than json, which matters at ten thousand entries per tick. States go through ``values``.
def _dump_entry(entry: dict[str, Any]) -> bytes:
    return values.own_size(orjson.dumps(entry))  # kept in the table: see own_size


def _dump_firing(firing: dict[str, Any]) -> bytes:
    return orjson.dumps(firing, default=values.tag, option=orjson.OPT_PASSTHROUGH_DATETIME)


def _get_many(store: Store, keys: list[str]) -> list[bytes | None]:
    get_many = getattr(store, "get_many", None)  # PartitionRows; a dict or a Faust table has none
    return get_many(keys) if get_many is not None else [store.get(k) for k in keys]


def _states_of(states: Mapping[str, Store], parts: list[tuple[str, str, str]]) -> list[bytes | None]:
    """The stored state of each ``(table, tenant, entity)``, None where there is none (or no table)."""
    out: list[bytes | None] = [None] * len(parts)
    by_table: dict[str, list[int]] = {}
    for i, (table, _, _) in enumerate(parts):
        if table in states:
            by_table.setdefault(table, []).append(i)
    for table, indexes in by_table.items():
        found = _get_many(states[table], [f"{parts[i][1]}/{parts[i][2]}" for i in indexes])
        for i, raw in zip(indexes, found, strict=True):
            out[i] = raw
    return out


def _entry(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        return {"timers": [], "done": {}}
    value = orjson.loads(raw)  # no dates in a timers entry: plain JSON, without values' tags
    return {"timers": value.get("timers", []), "done": value.get("done", {})}


def _earliest(items: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, float]]:
    for key, raw in items:
        timers = orjson.loads(raw).get("timers") or []
        if timers:
            yield key, min(t[0] for t in timers)


def _span(s: Any) -> dt.timedelta:
    return dt.timedelta(**{s.unit: s.amount})

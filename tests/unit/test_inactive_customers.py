"""An inactive customer of a tenant gets no mail from an event trigger nor a timed one; reactivated, it does again."""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.codecs.avro import SingleObjectCodec
from streams.domain.customers import REASON, InactiveCustomers
from streams.domain.samples import new_envelope, sample_event
from streams.ingest.pipeline import IngestPipeline
from tests.unit.conftest import NOW

TENANT = "stromnetz-sued"
ISSUE = "tidings.charging.StationIssueDetected"


def _status(kind: str, tenant: str, customer: str) -> dict[str, Any]:
    return {"envelope": new_envelope(tenant, now=NOW), "customer_id": customer}


def test_deactivate_and_reactivate_per_tenant() -> None:
    inactive = InactiveCustomers()
    assert inactive.apply("tidings.charging.CustomerDeactivated", _status("d", TENANT, "CU-1")) == "deactivated"
    assert inactive.is_inactive(TENANT, "CU-1")
    assert not inactive.is_inactive("voltpark-nl", "CU-1")  # the same id at another tenant is someone else
    assert inactive.apply("tidings.charging.CustomerReactivated", _status("r", TENANT, "CU-1")) == "reactivated"
    assert not inactive.is_inactive(TENANT, "CU-1") and len(inactive) == 0
    assert inactive.apply("tidings.charging.StationHeartbeat", {"station_id": "x"}) == "ignored"


def test_event_trigger_mail_to_an_inactive_customer_is_skipped_with_its_status(
    codec: SingleObjectCodec, pipeline: IngestPipeline
) -> None:
    inactive = InactiveCustomers()
    guarded = IngestPipeline(codec, pipeline.catalog, pipeline.tenants, pipeline.renderer, inactive=inactive)
    event = sample_event(pipeline.catalog.samples, ISSUE, TENANT, now=NOW)
    data = codec.encode(ISSUE, event)
    now = NOW  # the events are NOW: fresh, not stale

    assert len(guarded.process(data, topic="t", timestamp=NOW, now=now).mails) == 1
    inactive.apply("tidings.charging.CustomerDeactivated", _status("d", TENANT, event["customer"]["id"]))
    result = guarded.process(data, topic="t", timestamp=NOW, now=now)
    assert result.mails == [] and result.rejections == []
    assert [(s["tenant_id"], s["pack"], s["trigger"], s["source_event_id"]) for s in result.skipped] == [
        (TENANT, "charging", "evse.issue_detected", event["envelope"]["event_id"])
    ]
    assert REASON == "customer_inactive"
    inactive.apply("tidings.charging.CustomerReactivated", _status("r", TENANT, event["customer"]["id"]))
    assert len(guarded.process(data, topic="t", timestamp=NOW, now=now).mails) == 1


def test_other_tenants_and_other_recipients_are_not_touched(codec: SingleObjectCodec, pipeline: IngestPipeline) -> None:
    inactive = InactiveCustomers()
    guarded = IngestPipeline(codec, pipeline.catalog, pipeline.tenants, pipeline.renderer, inactive=inactive)
    event = sample_event(pipeline.catalog.samples, ISSUE, TENANT, now=NOW)
    inactive.apply("tidings.charging.CustomerDeactivated", _status("d", "voltpark-nl", event["customer"]["id"]))
    inactive.apply("tidings.charging.CustomerDeactivated", _status("d", TENANT, "CU-someone-else"))
    result = guarded.process(codec.encode(ISSUE, event), topic="t", timestamp=NOW, now=NOW)
    assert len(result.mails) == 1 and result.skipped == []


def test_a_timed_mail_to_an_inactive_customer_is_skipped_and_its_timer_still_fires() -> None:
    from streams.triggers.engine import TimedEngine
    from tests.unit.test_timed_engine import CATALOG, World, _customer, _tenant

    world = World(_tenant("voltpark-nl"))
    inactive = InactiveCustomers()
    world.engine = TimedEngine(CATALOG, world.tenants, world.engine.renderer, world.metrics, inactive=inactive)
    world.engine.rebuild(0, [])
    t0 = dt.datetime(2027, 1, 4, 8, tzinfo=dt.timezone.utc)
    minute = dt.timedelta(minutes=1)
    world.event("tidings.charging.StationRegistered", t0, station_id="ST-1", customer=_customer(), station_name="Thuislader",
                station_address=None, station_url="https://cp.example/st-1")
    world.event("tidings.charging.StationHeartbeat", t0, station_id="ST-1", seen_at=t0)
    inactive.apply("tidings.charging.CustomerDeactivated", _status("d", "voltpark-nl", "CU-1"))
    fired = [f for m in range(0, 40) for f in world.engine.on_tick(world.states, world.timers, 0, t0 + m * minute).firings]
    assert len(fired) == 1
    outcome = world.engine.render_firing(fired[0], "ticks")
    assert outcome.mails == [] and [s["trigger"] for s in outcome.skipped] == ["evse.connectivity_lost"]
    inactive.apply("tidings.charging.CustomerReactivated", _status("r", "voltpark-nl", "CU-1"))
    assert len(world.engine.render_firing(fired[0], "ticks").mails) == 1

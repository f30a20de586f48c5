"""No record can stop the tenants or suppressions feed (issue 14, "Feeds that cannot die").

Each record that once killed a feed is written straight to its topic (not through the CLI, whose
checks would refuse it); a worker started afterwards starts, rejects each with a reason (counted by
reason in its metrics), and applies the valid records written after them.
"""

from __future__ import annotations

import json

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.compacted import produce_records
from streams.suppression.model import Suppression, normalize_address
from tests.hostile import CHECK_KILLERS, UNCOMPILABLE, poisoned_records, tenant_data
from tests.integration.harness import Deployment
from tests.unit.conftest import NOW

TENANT = "boxit-london"


def test_a_worker_starts_past_poisoned_records_and_applies_the_next_valid_ones(deployment: Deployment) -> None:
    data = tenant_data()
    # The two templates that now compile (and fail at render time) are not poison any more.
    poisoned = {k: v for k, v in poisoned_records(data).items() if k not in CHECK_KILLERS or k in UNCOMPILABLE}
    produce_records(deployment.bootstrap, deployment.topics.tenants, [(TENANT.encode(), v) for v in poisoned.values()])
    # A compacted topic refuses a record without a key; one that is not UTF-8 gets through.
    produce_records(deployment.bootstrap, deployment.topics.tenants, [(b"\xff\xfe", b"{}")])
    victim = normalize_address(deployment.email("suppressed"))
    assert victim is not None
    nested = b'{"tenant_id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    produce_records(deployment.bootstrap, deployment.topics.suppressions, [(f"{TENANT}/{victim}".encode(), nested)])

    worker = deployment.start_worker()
    worker.wait_serving()
    deployment.wait_metric("tidings_tenant_records_rejected_total", len(poisoned) + 1)
    for reason in ("invalid_tenant", "not_servable", "invalid_key"):
        assert deployment.metric(worker, "tidings_tenant_records_rejected_total", reason=reason) >= 1, reason
    deployment.wait_metric("tidings_suppression_records_total", 1, outcome="rejected")
    log = worker.log_file.read_text(errors="replace")
    assert "ignored the record for tenant 'boxit-london' (not_servable)" in log
    assert "nested too deeply" in log

    # A valid version written after the poison applies: the next mail carries the new brand.
    renamed = f"Boxit Renamed {deployment.run}"
    valid = {**data, "brand": {**data["brand"], "name": renamed}}
    applied_before = deployment.metric(worker, "tidings_tenant_updates_total", outcome="applied")
    produce_records(deployment.bootstrap, deployment.topics.tenants, [(TENANT.encode(), json.dumps(valid).encode())])
    suppression = Suppression(TENANT, victim, "bounce", "all", NOW)
    produce_records(deployment.bootstrap, deployment.topics.suppressions, [suppression.encode()])
    deployment.wait_metric("tidings_suppression_records_total", 1, outcome="applied")
    deployment.wait_metric("tidings_tenant_updates_total", applied_before + 1, outcome="applied")

    event = booking_created(TENANT, 7, email=deployment.email("after"))
    deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
    deployment.publisher.flush()
    (mail,) = deployment.wait_for_mails(1)
    assert deployment.email("after") in mail.destinations[0]
    assert renamed in mail.message.get_body(("html",)).get_content()

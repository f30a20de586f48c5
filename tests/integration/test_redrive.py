"""``tidings-redrive`` on a real broker and SES emulator: a rejected mail goes out once after the fix.

SES rejects one recipient permanently (the fault proxy answers ``MessageRejected``), so the worker
records that mail FAILED and dead-letters it. After the "fix" (the proxy heals), the CLI, run as
a real process, republishes it and it reaches SES exactly once; a second run sends nothing more;
a copy of an already sent mail's record in the dead-letter topic is never sent again; a plain
replay of the failed record (no re-drive header) sends nothing. And an event dead-lettered for an
unknown tenant is re-ingested once the tenant is configured, while garbage beside it stays put.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from deploy.local.fault_proxy import FaultProxy
from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.delivery.ledger import REDRIVE_HEADER
from streams.outcomes import Rejection, dead_letter_headers
from streams.settings import REPO_ROOT
from streams.tenants import cli
from tests.integration.harness import Deployment

CLI_TIMEOUT_SECONDS = 120


def redrive(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    """``tidings-redrive`` as operators run it: its own process, configured by ``TIDINGS_*``."""
    env = {**os.environ, **deployment.env}
    return subprocess.run(
        [sys.executable, "-m", "streams.redrive", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS, check=False,
    )


def produce(deployment: Deployment, topic: str, record: Any, headers: list[tuple[str, bytes]] | None) -> None:
    producer = Producer({"bootstrap.servers": deployment.bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=record.key(), value=record.value(), partition=record.partition(), headers=headers)
    assert producer.flush(30) == 0


def sent_to(deployment: Deployment) -> Counter[str]:
    return Counter(m.destinations[0] for m in deployment.my_mails())


def test_a_rejected_mail_is_re_driven_once_after_the_fix_and_a_sent_one_never(deployment: Deployment) -> None:
    bounce, fine = deployment.email("bounce"), deployment.email("fine")
    with FaultProxy(deployment.ses_endpoint) as proxy:
        deployment.env["TIDINGS_SES_ENDPOINT_URL"] = proxy.endpoint
        proxy.reject(bounce)
        deployment.start_worker()
        for n, address in ((1, bounce), (2, fine)):
            event = booking_created("boxit-london", n, email=address, booking_id=f"BK-{deployment.run}-{n}")
            deployment.publisher.publish(deployment.topics.for_event(BOOKING_CREATED), BOOKING_CREATED, event, key=event["booking_id"])
        deployment.publisher.flush()

        (dead,) = deployment.read_topic(deployment.topics.dead_letter, 1)
        headers = {k: v.decode() for k, v in dead.headers()}
        assert (headers["tidings.stage"], headers["tidings.reason"]) == ("deliver", "rejected_by_provider")
        bounce_id = headers["tidings.message_id"]
        deployment.wait_for_mails(1)
        assert sent_to(deployment) == {fine: 1}

        outbound = deployment.read_topic(deployment.topics.outbound, 2)
        (fine_record,) = [r for r in outbound if r.key().decode() != bounce_id]
        (bounce_record,) = [r for r in outbound if r.key().decode() == bounce_id]
        fine_id = fine_record.key().decode()
        # A stray dead-lettered copy of the mail that was sent: a re-drive must never send it again.
        stray = Rejection("deliver", "rejected_by_provider", "a copy of a sent mail", fine_id)
        produce(deployment, deployment.topics.dead_letter, fine_record, dead_letter_headers(
            stray, topic=deployment.topics.outbound, partition=fine_record.partition(), offset=fine_record.offset()))
        # A plain replay of the failed mail (no re-drive header), still before the fix: skipped.
        produce(deployment, deployment.topics.outbound, bounce_record, None)
        deployment.wait_metric("tidings_duplicates_skipped_total", 1)

        proxy.heal()  # the fix

        dry = redrive(deployment)
        assert dry.returncode == 0, dry.stderr
        assert "dry run, would republish 2" in dry.stdout
        assert bounce_id in dry.stdout and fine_id in dry.stdout
        assert "tenant=boxit-london" in dry.stdout and "trigger=storage/booking.created" in dry.stdout
        assert "rejected_by_provider" in dry.stdout
        assert bounce not in dry.stdout and fine not in dry.stdout  # addresses are masked
        assert "c***@example.org" in dry.stdout

        elsewhere = redrive(deployment, "--tenant", "voltpark-nl", "--yes")
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert "selected 0, republishing 0" in elsewhere.stdout

        first = redrive(deployment, "--stage", "deliver", "--reason", "rejected_by_provider", "--yes")
        assert first.returncode == 0, first.stderr
        assert "republished 2 (deliver 2)" in first.stdout
        # The stray copy was skipped (2nd duplicate), so both re-driven records were processed.
        deployment.wait_metric("tidings_duplicates_skipped_total", 2)
        deployment.wait_for_mails(2)
        assert sent_to(deployment) == {fine: 1, bounce: 1}

        second = redrive(deployment, "--stage", "deliver", "--yes")
        assert second.returncode == 0, second.stderr
        assert "republished 2 (deliver 2)" in second.stdout
        deployment.wait_metric("tidings_duplicates_skipped_total", 4)
        assert sent_to(deployment) == {fine: 1, bounce: 1}
        assert proxy.stats().faulted == 1  # one rejection at SES; the replay never reached it

        marked = [r for r in deployment.read_topic(deployment.topics.outbound, 7)
                  if REDRIVE_HEADER in dict(r.headers() or ())]
        assert len(marked) == 4
        assert {r.partition() for r in marked if r.key().decode() == bounce_id} == {bounce_record.partition()}


def test_events_of_a_tenant_configured_late_are_re_ingested_and_garbage_stays(deployment: Deployment, tmp_path: Path) -> None:
    tenant_id = f"late-{deployment.run}"
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    source = (REPO_ROOT / "deploy" / "tenants" / "boxit-london.yaml").read_text()
    (tenants / f"{tenant_id}.yaml").write_text(source.replace("tenant_id: boxit-london", f"tenant_id: {tenant_id}"))
    deployment.start_worker()
    topic = deployment.topics.for_event(BOOKING_CREATED)
    event = booking_created(tenant_id, 1, email=deployment.email("late"), booking_id=f"BK-{deployment.run}")
    deployment.publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
    deployment.publisher.flush()
    garbage = Producer({"bootstrap.servers": deployment.bootstrap})
    garbage.produce(topic, key=b"BK-garbage", value=b"not avro at all")
    assert garbage.flush(30) == 0

    dead = deployment.read_topic(deployment.topics.dead_letter, 2)
    reasons = sorted(dict(d.headers())["tidings.reason"].decode() for d in dead)
    assert reasons == ["not_avro", "unknown_tenant"]

    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    window = redrive(deployment, "--since", later)
    assert window.returncode == 0, window.stderr
    assert "selected 0, dry run, would republish 0" in window.stdout
    bad = redrive(deployment, "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 instant" in bad.stderr

    cli.publish([tenants], deployment.settings)  # the fix: the tenant is configured
    deployment.wait_metric("tidings_tenants_loaded", 7)

    earlier = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)).isoformat()
    run = redrive(deployment, "--stage", "ingest", "--since", earlier, "--yes")
    assert run.returncode == 0, run.stderr
    assert "selected 2, republishing 1, skipped 1" in run.stdout
    assert "skipped 1: the bytes are not Avro; they would fail again" in run.stdout
    assert f"tenant={tenant_id}" in run.stdout and "(updates entity state)" in run.stdout
    assert "republished 1 (ingest 1)" in run.stdout
    (mail,) = deployment.wait_for_mails(1)
    assert mail.destinations[0] == deployment.email("late")

    again = redrive(deployment, "--stage", "ingest", "--tenant", tenant_id, "--yes")
    assert again.returncode == 0, again.stderr
    assert "republished 1 (ingest 1)" in again.stdout
    deployment.wait_metric("tidings_duplicates_skipped_total", 1)  # the same message id, already SENT
    assert len(deployment.my_mails()) == 1

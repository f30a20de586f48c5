"""``make demo``: Tidings doing its main job on real parts, start to finish.

Starts a Kafka broker and the SES emulator (unless ``TIDINGS_TEST_BOOTSTRAP`` /
``TIDINGS_TEST_SES_ENDPOINT`` name running ones), publishes the example tenants to the tenants
topic, starts one Tidings worker, publishes sample
booking events for two tenants in several languages, one event of each other pack (an invoice
with its PDF, an MFA notice, a welcome, an appointment for two people, an access revocation) and
the events of a month's story (``deploy/local/story.py``: a booking moving out, two invoices, a
charging station, an advisor short of open slots), waits until the mails are in SES, writes
each mail's HTML under ``.tidings/demo/``, prints what went out, then moves time on by simulation
(``tidings-replay --simulate`` over the demo's topics, exported to a file, plus the story's
payment on day 6: the worker's tick and firings handlers in memory, nothing sent) and lists the
timed mails of the next 45 days by day; and it stops everything
it started.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from deploy.local import story
from deploy.local.kafka_broker import EXISTING_BROKER_ENV, BrokerError, LocalBroker
from deploy.local.samples import BOOKING_CREATED, booking_created
from deploy.local.ses_emulator import (
    EXISTING_EMULATOR_ENV,
    SentMail,
    SesEmulator,
    put_sample_attachments,
    sent_mails,
    verify_domains,
)
from deploy.local.worker import WorkerProcess
from streams.domain.evaluate import field_at
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.producer import EventPublisher
from streams.replay.records import ReplayRecord, read_file, write_records
from streams.settings import REPO_ROOT, Settings
from streams.tenants import cli as tenants_cli
from streams.topics import TopicNames, ensure_topics

DEMO_DIR = REPO_ROOT / ".tidings" / "demo"
TENANTS_DIR = REPO_ROOT / "deploy" / "tenants"
DEADLINE_SECONDS = 120.0
SIMULATED_DAYS = 45  # the sample bookings move in 30 to 57 days after they are made
SIMULATION_SECONDS = 60.0
# (tenant, customer locale): German and English customers of a Hamburg operator, and a London one.
SAMPLES = [
    ("lagerhaus-nord", "de"), ("lagerhaus-nord", "de-AT"), ("lagerhaus-nord", "en-GB"), ("lagerhaus-nord", None),
    ("boxit-london", "en"), ("boxit-london", "en-US"), ("boxit-london", "de"), ("lagerhaus-nord", "de-CH"),
]
# One event of each other pack, from the pack's samples: (event type, tenant).
PACK_SAMPLES = [
    ("tidings.charging.MspInvoiceReady", "voltpark-nl"),  # with its PDF attached from S3
    ("tidings.charging.MfaEnabled", "stromnetz-sued"),
    ("tidings.tracker.AccountCreated", "device-tracker-plus"),
    ("tidings.advisors.AppointmentBooked", "beraterfinder"),  # two mails: advisor and customer
    ("tidings.storage.AccessRevoked", "boxit-london"),
]


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    DEMO_DIR.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get(EXISTING_BROKER_ENV)
        if not bootstrap:
            say("Starting a Kafka broker (Apache Kafka 4, KRaft, from Maven Central jars) ...")
            bootstrap = stack.enter_context(LocalBroker(DEMO_DIR / "kafka")).bootstrap
        endpoint = os.environ.get(EXISTING_EMULATOR_ENV)
        if not endpoint:
            say("Starting the SES emulator (moto server) ...")
            endpoint = stack.enter_context(SesEmulator(DEMO_DIR / "ses")).endpoint
        say(f"  Kafka on {bootstrap}, SES on {endpoint}")

        tenants = TenantDirectory.load(TENANTS_DIR)
        verify_domains(endpoint, (t.sender.from_address.rpartition("@")[2] for t in tenants))
        put_sample_attachments(endpoint)
        run = f"demo{int(time.time())}"
        settings = Settings(app_id=run, topic_prefix=f"{run}.", kafka_bootstrap=bootstrap)
        ensure_topics(settings)
        published = tenants_cli.publish([TENANTS_DIR], settings)
        say(f"Published {len(published)} example tenants to {TopicNames.from_settings(settings).tenants} "
            "(what `tidings-tenants publish deploy/tenants/` does)")
        worker = WorkerProcess(
            workdir=DEMO_DIR / "worker",
            env={
                "TIDINGS_APP_ID": settings.app_id,
                "TIDINGS_TOPIC_PREFIX": settings.topic_prefix,
                "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
                "TIDINGS_SES_ENDPOINT_URL": endpoint,
                "TIDINGS_S3_ENDPOINT_URL": endpoint,
                "TIDINGS_AWS_ACCESS_KEY_ID": "demo",
                "TIDINGS_AWS_SECRET_ACCESS_KEY": "demo",
                # Signs the example tenants' one-click unsubscribe links; a deployment sets its own.
                "TIDINGS_UNSUBSCRIBE_SECRET": "demo-only-unsubscribe-secret",
            },
        )
        say("Starting a Tidings worker ...")
        worker.start()
        stack.callback(worker.stop)
        worker.wait_serving()
        say(f"  metrics at {worker.metrics_url}, log in {worker.log_file}")

        publisher = EventPublisher(bootstrap, settings.schemas_dir)
        topics = TopicNames.from_settings(settings)
        topic = topics.for_event(BOOKING_CREATED)
        recipients = set()
        say(f"Publishing {len(SAMPLES)} BookingCreated events to {topic} ...")
        for n, (tenant, locale) in enumerate(SAMPLES):
            event = booking_created(tenant, n, email=f"customer{n}.{run}@example.org", locale=locale)
            publisher.publish(topic, BOOKING_CREATED, event, key=event["booking_id"])
            recipients.add(event["customer"]["email"])
        expected = len(SAMPLES)
        now = dt.datetime.now(dt.timezone.utc)
        say(f"Publishing {len(PACK_SAMPLES)} events of the other packs ...")
        for type_name, tenant_id in PACK_SAMPLES:
            def address(path: str, person: dict, t: str = type_name) -> dict:  # type: ignore[type-arg]
                email = f"{t.rsplit('.', 1)[1].lower()}-{path.replace('.', '-')}.{run}@example.org"
                recipients.add(email)
                return {**person, "email": email}

            event = sample_event(topics.catalog.samples, type_name, tenant_id, recipient=address)
            if type_name == "tidings.advisors.AppointmentBooked":
                event.update(story.appointment_times(now))  # the sample's own date has passed
            trigger = topics.catalog.for_event(type_name)[0]
            publisher.publish(topics.for_event(type_name), type_name, event, key=str(field_at(event, trigger.rule.entity)))
            expected += len(trigger.rule.mails)
            say(f"  {type_name} ({tenant_id}) -> {topics.for_event(type_name)}")
        month_events = story.published(now, run)
        say(f"Publishing {len(month_events)} events whose timed mails fall in the next weeks (deploy/local/story.py) ...")
        for event in month_events:
            publisher.publish(topics.for_event(event.type_name), event.type_name, event.record, key=event.key)
            if event.type_name == BOOKING_CREATED:  # the only one with an event mail: its confirmation
                recipients.add(event.record["customer"]["email"])
                expected += 1
        # Partition 0 for now: month() puts each on its entity's partition, known once exported.
        later = [ReplayRecord(topics.for_event(e.type_name), 0, 0, e.key.encode(), publisher.encode(e.type_name, e.record),
                              e.at.timestamp()) for e in story.later(now)]
        publisher.flush()
        del publisher  # before the broker stops, so the client does not complain about it

        deadline = time.monotonic() + DEADLINE_SECONDS
        mails: list[SentMail] = []
        while time.monotonic() < deadline:
            worker.assert_alive()
            mails = [m for m in sent_mails(endpoint) if m.destinations[0] in recipients]
            if len(mails) >= expected:
                break
            time.sleep(0.25)

        say("\nMails in the SES emulator:")
        for i, mail in enumerate(sorted(mails, key=lambda m: m.destinations[0])):
            path = DEMO_DIR / "mails" / f"{i + 1:02d}-{mail.destinations[0].split('@')[0]}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(mail.part("html"), encoding="utf-8")
            attached = "".join(f"  + {name}" for name, _ in mail.attachments())
            say(f"  {mail.destinations[0]:<52} [{mail.header('Content-Language')}] {mail.subject}{attached}")
            say(f"  {'':<52} {path.relative_to(REPO_ROOT)}")
        month(settings, bootstrap, now, later)
        say(f"\n{len(mails)} emails sent")
        if len(mails) < expected:
            say(f"expected {expected}; worker log:\n{worker.log_tail()}")
            return 1
    return 0


def month(settings: Settings, bootstrap: str, now: dt.datetime, later: list[ReplayRecord]) -> None:
    """The timed mails of the events above over the next weeks, by day: an event-time simulation
    (``tidings-replay --simulate``) of the demo's topics, exported to a file (``--export``), and of
    what the story says happens later (a payment on day 6), appended to it. Reads the demo's
    topics, writes nothing to Kafka and sends nothing."""
    say(f"\nMoving time on {SIMULATED_DAYS} days by simulation: the events above, and an invoice paid on day 6 ...")
    env = {**os.environ, "TIDINGS_TOPIC_PREFIX": settings.topic_prefix, "TIDINGS_APP_ID": settings.app_id,
           "TIDINGS_KAFKA_BOOTSTRAP": bootstrap, "TIDINGS_UNSUBSCRIBE_SECRET": "demo-only-unsubscribe-secret"}
    records, out = DEMO_DIR / "month-records.jsonl", DEMO_DIR / "month.jsonl"
    until = (now + dt.timedelta(days=SIMULATED_DAYS)).isoformat()
    if not _replay("the export of the demo's topics", env, "--dry-run", "--export", str(records), "--out", os.devnull):
        return
    _append_later(records, later)
    if not _replay("the simulation", env, "--simulate", "--file", str(records), "--until", until, "--step", "1h",
                   "--out", str(out)):
        return

    timed = [line for line in map(json.loads, out.read_text().splitlines())
             if line["why"] == "fired" and "firings" in line.get("source", "")]
    by_day: dict[str, list[str]] = {}
    for line in timed:
        by_day.setdefault(line["at"][:10], []).append(f"{line['trigger']} ({line['tenant']}): {line['subject']}")
    for day, mails in sorted(by_day.items()):
        for mail in mails:
            say(f"  {day}  {mail}")
    say(f"  {len(timed)} timed mails in {SIMULATED_DAYS} days; every one in {out.relative_to(REPO_ROOT)}")


def _replay(what: str, env: dict[str, str], *args: str) -> bool:
    """Run ``tidings-replay`` with ``args``; whether it succeeded (if not, says why)."""
    try:
        done = subprocess.run([sys.executable, "-m", "streams.replay", *args], env=env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=SIMULATION_SECONDS)
    except subprocess.TimeoutExpired:
        say(f"  {what} took longer than {SIMULATION_SECONDS:.0f} s; skipped")
        return False
    if done.returncode != 0:
        say(f"  {what} failed:\n{done.stderr[-2000:]}")
        return False
    return True


def _append_later(path: Path, later: list[ReplayRecord]) -> None:
    """Add the story's future records to an exported file, each on the partition its entity's
    records are on (the simulation keeps state per partition, as the worker does), in time order."""
    records = list(read_file(path))
    for record in later:
        record.partition = next((r.partition for r in records if r.topic == record.topic and r.key == record.key), 0)
        records.append(record)
    records.sort(key=lambda r: r.timestamp)
    with path.open("w", encoding="utf-8") as f:
        write_records(f, records)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokerError, RuntimeError, TimeoutError) as e:
        sys.exit(f"demo failed: {e}")

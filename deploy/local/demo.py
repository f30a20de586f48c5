"""``make demo``: Tidings doing its main job on real parts, start to finish.

Starts a Kafka broker and the SES emulator (unless ``TIDINGS_TEST_BOOTSTRAP`` /
``TIDINGS_TEST_SES_ENDPOINT`` name running ones), publishes the example tenants to the tenants
topic, starts one Tidings worker, publishes sample
booking events for two tenants in several languages and one event of each other pack (an invoice
with its PDF, an MFA notice, a welcome, an appointment for two people, an access revocation),
waits until the mails are in SES, writes
each mail's HTML under ``.tidings/demo/``, prints what went out, then moves time on by simulation
(``tidings-replay --simulate`` over the same topics: the worker's tick and firings handlers in
memory, nothing sent) and lists the timed mails those events mean, by day; and it stops everything
it started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time

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
        say(f"Publishing {len(PACK_SAMPLES)} events of the other packs ...")
        for type_name, tenant_id in PACK_SAMPLES:
            def address(path: str, person: dict, t: str = type_name) -> dict:  # type: ignore[type-arg]
                email = f"{t.rsplit('.', 1)[1].lower()}-{path.replace('.', '-')}.{run}@example.org"
                recipients.add(email)
                return {**person, "email": email}

            event = sample_event(topics.catalog.samples, type_name, tenant_id, recipient=address)
            trigger = topics.catalog.for_event(type_name)[0]
            publisher.publish(topics.for_event(type_name), type_name, event, key=str(field_at(event, trigger.rule.entity)))
            expected += len(trigger.rule.mails)
            say(f"  {type_name} ({tenant_id}) -> {topics.for_event(type_name)}")
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
        month(settings, bootstrap)
        say(f"\n{len(mails)} emails sent")
        if len(mails) < expected:
            say(f"expected {expected}; worker log:\n{worker.log_tail()}")
            return 1
    return 0


def month(settings: Settings, bootstrap: str) -> None:
    """The timed mails of the events above over the next weeks, by day: an event-time simulation
    (``tidings-replay --simulate``) over the demo's topics, which reads and writes nothing else."""
    say(f"\nMoving time on {SIMULATED_DAYS} days by simulation (tidings-replay --simulate --until +{SIMULATED_DAYS}d) ...")
    env = {**os.environ, "TIDINGS_TOPIC_PREFIX": settings.topic_prefix, "TIDINGS_APP_ID": settings.app_id,
           "TIDINGS_KAFKA_BOOTSTRAP": bootstrap, "TIDINGS_UNSUBSCRIBE_SECRET": "demo-only-unsubscribe-secret"}
    out = DEMO_DIR / "month.jsonl"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streams.replay", "--simulate", "--until", f"+{SIMULATED_DAYS}d", "--step", "1h",
             "--out", str(out)],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SIMULATION_SECONDS,
        )
    except subprocess.TimeoutExpired:
        say(f"  the simulation took longer than {SIMULATION_SECONDS:.0f} s; skipped")
        return
    if done.returncode != 0:
        say(f"  the simulation failed:\n{done.stderr[-2000:]}")
        return
    import json

    timed = [line for line in map(json.loads, out.read_text().splitlines())
             if line["why"] == "fired" and "firings" in line.get("source", "")]
    by_day: dict[str, list[str]] = {}
    for line in timed:
        by_day.setdefault(line["at"][:10], []).append(f"{line['trigger']} ({line['tenant']}, {line['locale']})")
    for day, mails in sorted(by_day.items()):
        for mail in mails:
            say(f"  {day}  {mail}")
    say(f"  {len(timed)} timed mails in {SIMULATED_DAYS} days; every one in {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokerError, RuntimeError, TimeoutError) as e:
        sys.exit(f"demo failed: {e}")

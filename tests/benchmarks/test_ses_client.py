"""CPU per SES request of the two clients, lean and boto3, against the stand-in (no Kafka, no worker).

Each client sends ``TIDINGS_BENCH_CLIENT_MAILS`` (default 2,000) real rendered mails (the sender
benchmark's booking confirmation, about 20 KB of MIME) to the stand-in with
``TIDINGS_SENDER_CONCURRENCY``-like concurrency (16) and no pacing, so the figure is the client's
own cost: this process's CPU time (all threads: boto3 works on a thread pool) over the mails
sent. The stand-in runs in its own process and is not counted. Printed and written to
``.tidings/bench/ses_client.json``; asserted: every mail accepted, and the lean client at most a
third of boto3's CPU per mail (the point of having it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from deploy.sesstub import SesStub
from streams.delivery.mime import build_mime
from streams.delivery.sender import EmailSender, SesSender
from streams.delivery.sesv2 import LeanSesSender
from streams.settings import REPO_ROOT, Settings
from tests.benchmarks.delivery import MailFactory

MAILS = int(os.environ.get("TIDINGS_BENCH_CLIENT_MAILS", "2000"))
CONCURRENCY = 16
JSON_PATH = REPO_ROOT / ".tidings" / "bench" / "ses_client.json"


async def _send_all(sender: EmailSender, mails: list[dict[str, Any]]) -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for mail in mails:
        queue.put_nowait(mail)

    async def actor() -> None:
        while not queue.empty():
            await sender.send(**queue.get_nowait())

    await asyncio.gather(*(actor() for _ in range(CONCURRENCY)))


def _cpu_per_mail(kind: str, endpoint: str, mails: list[dict[str, Any]]) -> dict[str, float]:
    settings = Settings(ses_endpoint_url=endpoint, aws_access_key_id=SecretStr("bench"),
                        aws_secret_access_key=SecretStr("bench"), sender_concurrency=CONCURRENCY)
    sender: EmailSender = LeanSesSender(settings) if kind == "lean" else SesSender(settings)

    async def run() -> tuple[float, float]:
        await _send_all(sender, mails[:50])  # connections, imports, first-call caches: not per mail
        cpu, wall = time.process_time(), time.monotonic()
        await _send_all(sender, mails)
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        if isinstance(sender, LeanSesSender):
            await sender.close()
        return cpu, wall

    try:
        cpu, wall = asyncio.run(run())
    finally:
        if isinstance(sender, SesSender):
            sender._client.close()
            sender._threads.shutdown()
    return {"cpu_ms_per_mail": round(cpu / len(mails) * 1000, 3), "mails_per_second": round(len(mails) / wall, 1)}


@pytest.mark.timeout(1800)
def test_cpu_per_mail_lean_vs_boto3(tmp_path: Path) -> None:
    factory = MailFactory(uuid.uuid4().hex[:8])
    template = factory.mail(0)
    raw = build_mime(template, [])
    mails = [{"from_address": template["from_address"], "to_address": f"c{n}.{factory.run}@example.org", "raw": raw,
              "tags": {"tenant": "lagerhaus-nord", "trigger": "booking_created"}} for n in range(MAILS)]
    figures: dict[str, Any] = {"mails": MAILS, "mime_bytes": len(raw)}
    with SesStub(tmp_path / "stub") as stub:
        for kind in ("lean", "boto3"):
            figures[kind] = _cpu_per_mail(kind, stub.endpoint, mails)
            print(f"\n{kind}: {figures[kind]}", flush=True)
        accepted = stub.stats().counts.get("accepted", 0)
    figures["lean_over_boto3"] = round(figures["lean"]["cpu_ms_per_mail"] / figures["boto3"]["cpu_ms_per_mail"], 3)
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(figures, indent=2))
    print(f"\n{figures}")
    assert accepted == 2 * (MAILS + 50)
    assert figures["lean_over_boto3"] <= 1 / 3

"""The SES stand-in (deploy/sesstub) against moto: both take the same requests from the sender.

The sender benchmark measures against the stand-in because moto takes about 190 requests/s; that
figure only means something if the stand-in sees what moto (and SES) would: the same request
document, the same MIME bytes, a SigV4 signature of the same shape, and the same error answers
reaching the client's classification. Both clients are checked: the lean one (the default) and
boto3's, kept as the reference.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from deploy.local.fault_proxy import FaultProxy
from deploy.local.samples import tiny_pdf
from deploy.local.ses_emulator import ses_client, verify_domains
from deploy.sesstub import SesStub
from streams.delivery.mime import build_mime
from streams.delivery.pacing import WireGate
from streams.delivery.sender import EmailSender, SesSender
from streams.delivery.sesv2 import LeanSesSender
from streams.errors import OutcomeUnknown, PermanentDelivery, RetryableDelivery
from streams.settings import Settings
from tests.benchmarks.delivery import MailFactory


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SesStub]:
    with SesStub(tmp_path_factory.mktemp("sesstub")) as s:
        yield s


def _settings(endpoint: str, **extra: Any) -> Settings:
    return Settings(ses_endpoint_url=endpoint, aws_access_key_id=SecretStr("test"),
                    aws_secret_access_key=SecretStr("test"), **extra)


def _sender(kind: str, endpoint: str, **extra: Any) -> EmailSender:
    return (LeanSesSender if kind == "lean" else SesSender)(_settings(endpoint, **extra))


def _send(sender: EmailSender, **mail: Any) -> str:
    async def once() -> str:
        try:
            return await sender.send(**mail)
        finally:
            if isinstance(sender, LeanSesSender):
                await sender.close()

    try:
        return asyncio.run(once())
    finally:
        if isinstance(sender, SesSender):
            sender._client.close()


def _real_mail(run: str) -> dict[str, Any]:
    """A rendered production mail with a PDF attached and non-ASCII text, as the sender gets it."""
    mail = MailFactory(run).mail(0)
    attachment = {"uri": "s3://parity/invoice.pdf", "filename": "Rechnung-Grüße.pdf", "content_type": "application/pdf"}
    raw = build_mime(mail, [(attachment, tiny_pdf("parity"))])
    return {"from_address": mail["from_address"], "to_address": mail["to_address"], "raw": raw,
            "tags": {"tenant": "lagerhaus-nord", "trigger": "booking_created"}, "configuration_set": "tidings-events"}


def test_moto_and_the_stand_in_take_the_same_request_from_both_clients(ses_endpoint: str, stub: SesStub) -> None:
    run = uuid.uuid4().hex[:8]
    mail = _real_mail(run)
    stub.faults(heal=True, capture=4)
    verify_domains(ses_endpoint, [mail["from_address"].rpartition("@")[2]])
    client = ses_client(ses_endpoint)
    try:
        client.create_configuration_set(ConfigurationSetName=f"tidings-events-{run}")
    finally:
        client.close()
    mail["configuration_set"] = f"tidings-events-{run}"

    moto_ids = [_send(_sender(kind, ses_endpoint), **mail) for kind in ("lean", "boto3")]
    stub_ids = [_send(_sender(kind, stub.endpoint), **mail) for kind in ("lean", "boto3")]

    # moto stored the message the lean client sent byte for byte, as it did boto3's.
    stored = [m for m in _moto_raw(ses_endpoint) if m["id"] in moto_ids]
    assert len(stored) == 2 and all(m["raw_data"].encode() == mail["raw"] for m in stored)
    assert all(mail["to_address"] in m["destinations"] for m in stored)
    # The stand-in got the same document from both, the MIME bytes intact.
    lean, boto = stub.captured()[-2:]
    lean_doc, boto_doc = json.loads(lean["body"]), json.loads(boto["body"])
    assert lean_doc == boto_doc
    assert base64.b64decode(lean_doc["Content"]["Raw"]["Data"]) == mail["raw"]
    # The same headers carry the request's meaning and signature (User-Agent and the like differ).
    for name in ("content-type", "host"):
        assert lean["headers"][name] == boto["headers"][name]
    for request in (lean, boto):
        scope, signed = request["headers"]["authorization"].split(", ")[:2]
        assert scope.startswith("AWS4-HMAC-SHA256 Credential=test/") and scope.endswith("/eu-west-1/ses/aws4_request")
        assert signed == "SignedHeaders=content-type;host;x-amz-date"
    assert len(set(stub_ids)) == 2


def test_the_stand_ins_account_answer_parses_with_botocores_model(stub: SesStub) -> None:
    client = ses_client(stub.endpoint)
    try:
        account = client.get_account()
    finally:
        client.close()
    assert account["SendingEnabled"] is True and account["SendQuota"]["MaxSendRate"] > 0


def test_the_stand_in_refuses_an_unsigned_request(stub: SesStub) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{stub.endpoint}/v2/email/outbound-emails", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    caught.value.close()
    assert caught.value.code == 403 and caught.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


FAULTS = [
    ("throttle", RetryableDelivery, "ses:TooManyRequestsException"),
    ("unavailable", RetryableDelivery, "ses:ServiceUnavailable"),
    # The connection drops with no answer: the sender cannot tell whether SES took the mail.
    ("reset", OutcomeUnknown, "transport:"),
    ("reject", PermanentDelivery, "ses:MessageRejected"),
]


def _switch(target: SesStub | FaultProxy, fault: str) -> None:
    {
        "throttle": lambda: target.throttle(1.0),
        "unavailable": lambda: target.unavailable(),
        "reset": lambda: target.unavailable("reset"),
        "reject": lambda: target.reject("@example.org"),
    }[fault]()


@pytest.mark.parametrize("kind", ["lean", "boto3"])
@pytest.mark.parametrize(("fault", "error", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_fault_from_the_stand_in_reaches_the_client_like_one_through_the_proxy_to_moto(
    ses_endpoint: str, stub: SesStub, kind: str, fault: str, error: type, reason: str
) -> None:
    run = uuid.uuid4().hex[:8]
    mail = {"from_address": f"noreply@parity-{run}.example.com", "to_address": f"p.{run}@example.org",
            "raw": f"From: noreply@parity-{run}.example.com\r\nTo: p.{run}@example.org\r\nSubject: x\r\n\r\nhi\r\n".encode(),
            "tags": {}}
    verify_domains(ses_endpoint, [mail["from_address"].rpartition("@")[2]])
    with FaultProxy(ses_endpoint) as proxy:
        for target in (stub, proxy):
            target.heal()
            _switch(target, fault)
            with pytest.raises(error) as caught:
                _send(_sender(kind, target.endpoint), **mail)
            assert str(caught.value).startswith(reason), (target, caught.value)
            target.heal()
            assert _send(_sender(kind, target.endpoint), **mail)  # healed, the same mail goes


def test_faults_set_at_start_answer_the_first_request(tmp_path: Path) -> None:
    mail = {"from_address": "a@parity.example.com", "to_address": "first@example.org", "raw": b"Subject: x\r\n\r\nhi\r\n", "tags": {}}
    with SesStub(tmp_path, faults={"unavailable": "503", "unavailable_seconds": 600}) as outage:
        with pytest.raises(RetryableDelivery, match="ses:ServiceUnavailable"):
            _send(_sender("lean", outage.endpoint), **mail)
        assert outage.counts() == {"requests": 1, "unavailable-503": 1}


@pytest.mark.parametrize("kind", ["lean", "boto3"])
def test_no_answer_within_the_timeout_is_an_unknown_outcome_and_no_connection_is_retryable(stub: SesStub, kind: str) -> None:
    mail = {"from_address": "a@parity.example.com", "to_address": "slow@example.org", "raw": b"Subject: x\r\n\r\nhi\r\n", "tags": {}}
    stub.faults(heal=True, latency_ms=3000)
    try:
        with pytest.raises(OutcomeUnknown, match="transport:"):
            _send(_sender(kind, stub.endpoint, ses_timeout_seconds=0.5), **mail)
    finally:
        stub.faults(heal=True)
    with socket.socket() as s:  # a port nobody listens on: the connection is refused, nothing left
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(RetryableDelivery, match="transport:"):
        _send(_sender(kind, closed), **mail)


def _moto_raw(endpoint: str) -> list[dict[str, Any]]:
    import urllib.request

    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=30) as response:
        raw: list[dict[str, Any]] = json.load(response).get("ses", {}).get("RawMessage", [])
    return raw



def test_the_stand_ins_own_go_tests_pass() -> None:
    """main.go's unit tests (SigV4 shape, faults, the fast body decoding) run with the rest of the suite."""
    import os
    import subprocess

    from deploy.sesstub import SOURCE_DIR, go_binary

    result = subprocess.run([go_binary(), "test", "-count=1", "."], cwd=SOURCE_DIR, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "CGO_ENABLED": "0"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@pytest.mark.parametrize("kind", ["lean", "boto3"])
def test_the_stand_in_stamps_each_arrival_with_the_kernels_receive_time(own_stub: SesStub, kind: str) -> None:
    """Arrivals are the kernel's receive times (``arrival.go``), on this machine for every request
    of both clients, each between the moment its send began and the moment it was answered."""
    spans = []
    for n in range(3):
        began = time.time()
        _send(_sender(kind, own_stub.endpoint), from_address="a@shop.example", to_address=f"k{n}@example.org",
              raw=b"Subject: stamp\r\n\r\nhello\r\n", tags={})
        spans.append((began, time.time()))
    stats = own_stub.stats()
    assert stats.stamps["clock"] == 0 and stats.stamps["kernel"] >= 3
    assert len(stats.accepted_sends) == 3
    for at, (began, answered) in zip(stats.accepted_sends, spans, strict=True):
        assert began <= at <= answered


@pytest.fixture
def own_stub(tmp_path: Path) -> Iterator[SesStub]:
    """A stand-in no other test's slow requests can reach (the module's may still be answering some)."""
    with SesStub(tmp_path / "sesstub") as s:
        yield s


def test_the_lean_clients_wire_gate_holds_the_request_itself_not_only_its_turn(own_stub: SesStub) -> None:
    """The gate is passed at the write (``sesv2.py``): while it is closed, not even the request's
    headers reach SES, whose handler starts (and counts the request) on the headers."""
    stub = own_stub
    sender = LeanSesSender(_settings(stub.endpoint))
    gate = WireGate(1)
    mail = {"from_address": "a@shop.example", "raw": b"Subject: gate\r\n\r\nhello\r\n", "tags": {}}

    async def main() -> tuple[int, float]:
        try:
            await gate.admit()  # the window holds its one place for the next second
            started = time.monotonic()
            request = asyncio.create_task(sender.send(to_address="held@example.org", gate=gate, **mail))
            await asyncio.sleep(0.5)
            early = stub.counts().get("requests", 0)
            await request
            return early, time.monotonic() - started
        finally:
            await sender.close()

    early, took = asyncio.run(main())
    assert early == 0
    assert took >= 0.9 and stub.counts()["accepted"] == 1


def test_through_the_wire_gate_a_clump_of_requests_reaches_ses_at_most_cap_a_second(own_stub: SesStub) -> None:
    stub = own_stub
    sender = LeanSesSender(_settings(stub.endpoint))
    gate = WireGate(5)

    async def main() -> None:
        try:
            await asyncio.gather(*(
                sender.send(from_address="a@shop.example", to_address=f"r{n}@example.org",
                            raw=b"Subject: clump\r\n\r\nhello\r\n", tags={}, gate=gate)
                for n in range(12)
            ))
        finally:
            await sender.close()

    asyncio.run(main())
    stats = stub.stats()
    assert len(stats.accepted_sends) == 12
    assert stats.peak_sends(1.0) == 5
    assert stats.accepted_sends[-1] - stats.accepted_sends[0] >= 2.0 - 0.05  # 5, 5 a second later, 2 after that

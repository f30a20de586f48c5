"""The fault proxy in front of the real SES emulator: each fault reaches boto3 as real SES's would.

Every test gets its own proxy, sender domain and recipients; only the emulator is shared.
"""

from __future__ import annotations

import asyncio
import http.client
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from deploy.local.fault_proxy import FaultProxy
from deploy.local.ses_emulator import SentMail, sent_mails, ses_client, verify_domains
from streams.delivery.sender import SesSender, classify_ses_error
from streams.errors import OutcomeUnknown, PermanentDelivery, RetryableDelivery
from streams.settings import Settings


@dataclass
class Run:
    """One test's proxy, boto3 client and addresses."""

    id: str
    proxy: FaultProxy
    client: Any
    ses_endpoint: str

    @property
    def sender(self) -> str:
        return f"noreply@fp-{self.id}.example.com"

    def recipient(self, name: str | int) -> str:
        return f"{name}.{self.id}@example.org"

    def send(self, to: str) -> str:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, f"fault proxy {self.id}"
        message.set_content("hello")
        response = self.client.send_email(
            FromEmailAddress=self.sender,
            Destination={"ToAddresses": [to]},
            Content={"Raw": {"Data": message.as_bytes()}},
        )
        return str(response["MessageId"])

    def arrived(self) -> list[SentMail]:
        return [m for m in sent_mails(self.ses_endpoint) if any(self.id in d for d in m.destinations)]


@pytest.fixture
def run(ses_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    # One HTTP request per call: botocore's own retries would hide the faults under test (the
    # production sender turns them off too, see streams/delivery/sender.py).
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with FaultProxy(ses_endpoint) as proxy:
        client = ses_client(proxy.endpoint)
        r = Run(id=uuid.uuid4().hex[:8], proxy=proxy, client=client, ses_endpoint=ses_endpoint)
        verify_domains(proxy.endpoint, [r.sender.rpartition("@")[2]])
        try:
            yield r
        finally:
            client.close()


def client_error(run: Run, to: str) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        run.send(to)
    error = caught.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


def test_pass_through_reaches_the_emulator(run: Run) -> None:
    ids = [run.send(run.recipient(i)) for i in range(3)]
    arrived = run.arrived()
    assert sorted(m.ses_id for m in arrived) == sorted(ids)
    stats = run.proxy.stats()
    assert stats.faulted == 0 and stats.upstream_errors == 0
    assert stats.send_requests == 3 and len(stats.accepted_sends) == 3
    assert stats.forwarded == stats.requests >= 4  # the domain verification went through as well


def test_throttle_answers_send_email_with_too_many_requests(run: Run) -> None:
    run.proxy.throttle(1.0)
    code, status = client_error(run, run.recipient("t"))
    assert (code, status) == ("TooManyRequestsException", 429)
    assert isinstance(classify_ses_error(code, status), RetryableDelivery)
    run.client.get_email_identity(EmailIdentity=run.sender.rpartition("@")[2])  # other calls pass
    assert run.arrived() == []
    run.proxy.heal()
    run.send(run.recipient("t"))
    assert len(run.arrived()) == 1


def test_throttle_hits_the_seeded_fraction_of_sends(run: Run) -> None:
    run.proxy.throttle(0.3, seed=42)
    draws = random.Random(42)
    expected = [draws.random() < 0.3 for _ in range(40)]
    throttled = []
    for i in range(40):
        try:
            run.send(run.recipient(i))
            throttled.append(False)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "TooManyRequestsException"
            throttled.append(True)
    assert throttled == expected
    assert 0 < sum(throttled) < 40
    assert len(run.arrived()) == 40 - sum(throttled)
    stats = run.proxy.stats()
    assert stats.faulted == sum(throttled) and len(stats.accepted_sends) == 40 - sum(throttled)


def test_unavailable_answers_every_call_with_503(run: Run) -> None:
    run.proxy.unavailable()
    code, status = client_error(run, run.recipient("u"))
    assert (code, status) == ("ServiceUnavailable", 503)
    assert isinstance(classify_ses_error(code, status), RetryableDelivery)
    with pytest.raises(ClientError):
        run.client.get_email_identity(EmailIdentity=run.sender.rpartition("@")[2])
    run.proxy.heal()
    run.send(run.recipient("u"))
    assert len(run.arrived()) == 1


def test_unavailable_reset_drops_the_connection(run: Run) -> None:
    run.proxy.unavailable("reset")
    for _ in range(2):  # a fresh connection and a reused one fail alike
        with pytest.raises(BotoCoreError):
            run.send(run.recipient("r"))
    run.proxy.heal()
    run.send(run.recipient("r"))
    assert len(run.arrived()) == 1
    assert run.proxy.stats().faulted == 2


def test_reject_answers_matching_recipients_with_message_rejected(run: Run) -> None:
    run.proxy.reject(f"bounce.{run.id}")
    code, status = client_error(run, run.recipient("bounce"))
    assert (code, status) == ("MessageRejected", 400)
    assert isinstance(classify_ses_error(code, status), PermanentDelivery)
    run.send(run.recipient("fine"))  # other recipients pass meanwhile
    assert [m.destinations for m in run.arrived()] == [(run.recipient("fine"),)]
    run.proxy.heal()
    run.send(run.recipient("bounce"))
    assert len(run.arrived()) == 2


def test_a_fault_with_seconds_heals_itself(run: Run) -> None:
    run.proxy.throttle(1.0, seconds=0.5)
    assert client_error(run, run.recipient("s"))[0] == "TooManyRequestsException"
    time.sleep(0.6)
    run.send(run.recipient("s"))
    assert len(run.arrived()) == 1


@pytest.mark.parametrize(
    ("fault", "kind", "reason"),
    [
        (lambda p: p.throttle(1.0), RetryableDelivery, "ses:TooManyRequestsException"),
        (lambda p: p.unavailable(), RetryableDelivery, "ses:ServiceUnavailable"),
        # The connection drops with no answer: the sender cannot tell whether SES took the mail.
        (lambda p: p.unavailable("reset"), OutcomeUnknown, "transport:"),
        (lambda p: p.reject("@example.org"), PermanentDelivery, "ses:MessageRejected"),
    ],
    ids=["throttle", "unavailable", "reset", "reject"],
)
def test_the_production_sender_classifies_each_fault(run: Run, fault: Any, kind: type, reason: str) -> None:
    settings = Settings(
        ses_endpoint_url=run.proxy.endpoint, aws_access_key_id=SecretStr("test"), aws_secret_access_key=SecretStr("test")
    )
    sender = SesSender(settings)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = run.sender, run.recipient("p"), "production path"
    message.set_content("hello")

    def send() -> str:
        mail = sender.send(from_address=run.sender, to_address=run.recipient("p"), raw=message.as_bytes(), tags={})
        return asyncio.run(mail)

    try:
        fault(run.proxy)
        with pytest.raises(kind) as caught:
            send()
        assert str(caught.value).startswith(reason)
        run.proxy.heal()
        send()
    finally:
        sender._client.close()
    assert len(run.arrived()) == 1


def test_forwards_only_to_its_upstream(run: Run) -> None:
    for upstream in ("http://example.com:80", "http://localhost:4566", "https://127.0.0.1:4566", "http://127.0.0.1"):
        with pytest.raises(ValueError, match="only to http://127.0.0.1"):
            FaultProxy(upstream)
    # An absolute URI in the request line does not choose the destination: the path goes upstream.
    port = int(run.proxy.endpoint.rpartition(":")[2])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "http://203.0.113.7/moto-api/data.json", headers={"Host": "203.0.113.7"})
        response = connection.getresponse()
        assert response.status == 200 and b'"ses"' in response.read()
    finally:
        connection.close()

"""The lean SES client's request, checked against botocore's own signer and serializer (no I/O)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest

from streams.delivery.sesv2 import LeanSesSender, SigV4Signer, _endpoint, _error, send_email_body
from streams.settings import Settings

NOW = dt.datetime(2026, 3, 1, 12, 30, 5, tzinfo=dt.timezone.utc)


def _botocore_signed(url: str, body: bytes, token: str | None) -> dict[str, str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token), "ses", "eu-west-1").add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize("token", [None, "session-token-value"])
@pytest.mark.parametrize("url", ["http://127.0.0.1:4566", "https://email.eu-west-1.amazonaws.com"])
def test_the_signature_is_the_one_botocore_computes(url: str, token: str | None) -> None:
    body = send_email_body("a@shop.example", "b@example.org", b"Subject: hi\r\n\r\nhello\r\n", {"tenant": "t"}, None)
    theirs = _botocore_signed(url + "/v2/email/outbound-emails", body, token)
    # Signed at the instant botocore stamped, so the two signatures must agree to the byte.
    instant = dt.datetime.strptime(theirs["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    _, host = _endpoint(Settings(ses_endpoint_url=url if "127.0.0.1" in url else None))
    ours = SigV4Signer(host, "eu-west-1").headers(
        "POST", "/v2/email/outbound-emails", body, access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token=token, now=instant,
    )
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token") == token


def test_a_new_day_derives_a_new_signing_key() -> None:
    signer = SigV4Signer("email.eu-west-1.amazonaws.com", "eu-west-1")
    kwargs: dict[str, Any] = {"access_key": "AK", "secret_key": "SK", "token": None}
    first = signer.headers("POST", "/", b"{}", now=NOW, **kwargs)["Authorization"]
    later = signer.headers("POST", "/", b"{}", now=NOW + dt.timedelta(days=1), **kwargs)["Authorization"]
    again = SigV4Signer("email.eu-west-1.amazonaws.com", "eu-west-1").headers(
        "POST", "/", b"{}", now=NOW + dt.timedelta(days=1), **kwargs)["Authorization"]
    assert first != later == again


@pytest.mark.parametrize("configuration_set", [None, "tenant-events"])
def test_the_body_is_the_document_botocore_serializes(configuration_set: str | None) -> None:
    import boto3

    raw = "Subject: Grüße\r\nTo: b@example.org\r\n\r\nhallo\r\n".encode()
    tags = {"tenant": "lagerhaus-nord", "trigger": "booking_created"}
    client = boto3.client("sesv2", region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b",
                          endpoint_url="http://127.0.0.1:9")
    seen: dict[str, Any] = {}

    def capture(request: Any, **kwargs: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        seen["body"], seen["headers"], seen["url"] = request.body, dict(request.headers.items()), request.url

        class Raw:  # the answer botocore would have read from SES; the request never leaves
            def stream(self, **kw: Any) -> Any:
                yield b'{"MessageId":"m-1"}'

        return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, Raw())

    client.meta.events.register("before-send.sesv2.SendEmail", capture)
    extra = {"ConfigurationSetName": configuration_set} if configuration_set else {}
    client.send_email(FromEmailAddress="a@shop.example", Destination={"ToAddresses": ["b@example.org"]},
                      Content={"Raw": {"Data": raw}}, EmailTags=[{"Name": k, "Value": v} for k, v in tags.items()], **extra)
    ours = send_email_body("a@shop.example", "b@example.org", raw, tags, configuration_set)
    assert json.loads(ours) == json.loads(seen["body"])
    assert seen["url"].endswith("/v2/email/outbound-emails")
    assert seen["headers"]["Content-Type"] in (b"application/json", "application/json")


@pytest.mark.parametrize(
    ("status", "header", "body", "expected"),
    [
        (429, "TooManyRequestsException", b'{"message":"Maximum sending rate exceeded."}',
         ("TooManyRequestsException", "Maximum sending rate exceeded.")),
        (400, "MessageRejected:http://internal.amazon.com/coral/", b'{"message":"Email address is not verified"}',
         ("MessageRejected", "Email address is not verified")),
        (400, "", b'{"__type":"com.amazonaws#BadRequestException","Message":"bad"}', ("BadRequestException", "bad")),
        (502, "", b"<html>bad gateway</html>", ("502", "")),
    ],
)
def test_error_answers_are_read_like_botocore_reads_them(status: int, header: str, body: bytes, expected: tuple[str, str]) -> None:
    assert _error(status, header, body) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/prefix", "ftp://127.0.0.1:9", "127.0.0.1:9"])
def test_an_endpoint_with_a_path_or_without_a_scheme_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValueError, match="TIDINGS_SES_ENDPOINT_URL"):
        _endpoint(Settings(ses_endpoint_url=url))


def test_the_default_endpoint_is_the_regional_one() -> None:
    assert _endpoint(Settings(aws_region="eu-central-1")) == ("https://email.eu-central-1.amazonaws.com", "email.eu-central-1.amazonaws.com")


def test_held_requests_leave_when_due_and_a_gap_apart() -> None:
    from pydantic import SecretStr

    late = 0.005  # how late the first departure's sleep may wake on a busy machine

    sender = LeanSesSender(Settings(ses_endpoint_url="http://127.0.0.1:9", aws_access_key_id=SecretStr("a"),
                                    aws_secret_access_key=SecretStr("b")))

    async def departures() -> list[float]:
        due = time.monotonic() + 0.05
        left = []
        await sender._hold(due, 0.0)
        left.append(time.monotonic())
        assert left[0] >= due
        past = time.monotonic() - 1.0  # three requests due long ago leave a gap apart, not at once
        for i in range(3):
            await sender._hold(past + i * 0.001, 0.04)
            left.append(time.monotonic())
        return left

    _, first, second, third = asyncio.run(departures())
    # the first left at its due moment, so the late ones have no slot in the past to catch up
    assert second - first >= 0.04 - late - 1e-3 and third - second >= 0.04 - late - 1e-3


def test_no_credentials_anywhere_holds_the_sender_instead_of_failing_mails(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from streams.errors import SendingBlocked

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sender = LeanSesSender(Settings(ses_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(SendingBlocked, match="credentials:none"):
        asyncio.run(sender.send(from_address="a@b.example", to_address="c@d.example", raw=b"x", tags={}))

"""The SES emulator: moto's server on 127.0.0.1, and helpers to read back what it was sent.

moto keeps every ``SendEmail`` it accepted; ``/moto-api/data.json`` lists them (raw MIME for raw
sends). SES only sends from verified identities, and so does moto: ``verify_domains`` registers
the tenants' sender domains, as an operator does once in the AWS console.

    python -m deploy.local.ses_emulator run        run in the foreground until Ctrl-C

The same server is the object store that invoice PDFs are attached from (moto serves every AWS
API on one port): ``put_sample_attachments`` uploads a small PDF for every attachment the packs'
sample events reference.

Set ``TIDINGS_TEST_SES_ENDPOINT=http://host:port`` to use a running emulator instead.
"""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from deploy.local.support import free_port, http_ok, terminate, wait_until

EXISTING_EMULATOR_ENV = "TIDINGS_TEST_SES_ENDPOINT"
REGION = "eu-west-1"
START_TIMEOUT_SECONDS = 60.0


@dataclass
class SesEmulator:
    workdir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> SesEmulator:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        # The child keeps its own copy of the descriptor; the parent's closes with the block.
        with open(self.workdir / "moto.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self.process.returncode}: {(self.workdir / 'moto.log').read_text()[-2000:]}"
                )
            return http_ok(f"{self.endpoint}/moto-api/")

        wait_until(ready, timeout=timeout, what=f"SES emulator on {self.endpoint}")
        return self

    def stop(self) -> None:
        terminate(self.process, 10)

    def __enter__(self) -> SesEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ses_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "sesv2", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )


def put_object(endpoint: str, uri: str, data: bytes) -> None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    client = s3_client(endpoint)
    try:
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    client.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/pdf")


def put_sample_attachments(endpoint: str) -> list[str]:
    """Upload a PDF for every attachment URI in the packs' sample events; returns the URIs."""
    from deploy.local.samples import tiny_pdf
    from streams.domain.rules import Catalog

    catalog = Catalog.load()
    uris = []
    for trigger in catalog.event_triggers():
        sample = catalog.samples.get(trigger.rule.event, {})
        for mail in trigger.rule.mails:
            for rule in mail.attachments:
                uri = sample.get(rule.uri)
                if isinstance(uri, str):
                    put_object(endpoint, uri, tiny_pdf(uri))
                    uris.append(uri)
    return uris


def reset(endpoint: str) -> None:
    """Forget everything the emulator holds (sent mails, identities, buckets): moto's own reset.

    The integration tests share one emulator per session and read what it sent by listing *every*
    mail it holds; without a reset, each later test parses all earlier tests' mails at every poll.
    """
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


def verify_domains(endpoint: str, domains: Iterable[str]) -> None:
    client = ses_client(endpoint)
    for domain in sorted(set(domains)):
        client.create_email_identity(EmailIdentity=domain)


def prepare(endpoint: str, *, fresh: bool = False) -> None:
    """The example tenants' sender domains verified and the sample PDFs in S3; ``fresh``: reset first."""
    from streams.domain.tenants import TenantDirectory
    from streams.settings import REPO_ROOT

    if fresh:
        reset(endpoint)
    tenants = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants")
    verify_domains(endpoint, (t.sender.from_address.rpartition("@")[2] for t in tenants))
    put_sample_attachments(endpoint)


@dataclass(frozen=True)
class SentMail:
    """One mail the emulator accepted, parsed."""

    ses_id: str
    source: str
    destinations: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)

    def attachments(self) -> list[tuple[str, bytes]]:
        """(file name, bytes) of every attachment."""
        return [(str(a.get_filename()), bytes(a.get_content())) for a in self.message.iter_attachments()]

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        if body is None:
            raise KeyError(f"no text/{subtype} part")
        return str(body.get_content())


def sent_mails(endpoint: str) -> list[SentMail]:
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=10) as response:
        data = json.load(response)
    mails = []
    for raw in data.get("ses", {}).get("RawMessage", []):
        message = email.message_from_string(raw["raw_data"], policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mails.append(
            SentMail(
                ses_id=raw["id"], source=raw["source"], destinations=tuple(dict.fromkeys(raw["destinations"])), message=message
            )
        )
    return mails


def _main() -> None:
    import tempfile

    with SesEmulator(Path(tempfile.mkdtemp(prefix="tidings-ses-"))) as emulator:
        print(f"SES emulator on {emulator.endpoint} (Ctrl-C stops it)", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    _main()

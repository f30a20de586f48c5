"""Files that go with a mail, fetched from the object store at send time.

Outbound records carry attachments by reference (``s3://bucket/key``), never the bytes: Kafka
records stay small, and an invoice PDF is read once, by the sender, when the mail goes out.
``AttachmentStore.fetch`` returns the bytes or raises the delivery error that says what to do:
a missing object or one over the size limit is permanent (dead-letter the mail); anything else
(throttling, 5xx, no connection, access denied until an operator fixes a policy) is retried.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.errors import PermanentDelivery, RetryableDelivery
from streams.settings import Settings

MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})


class AttachmentStore(Protocol):
    async def fetch(self, uri: str) -> bytes: ...


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise PermanentDelivery(f"attachment_unsupported: {uri.split(':', 1)[0]}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise PermanentDelivery("attachment_unsupported: not s3://bucket/key")
    return bucket, key


class S3AttachmentStore:
    """S3 through boto3, on a worker thread; the client is made on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self.max_bytes = settings.max_attachment_bytes

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            s = self._settings
            self._client = boto3.client(
                "s3",
                endpoint_url=s.s3_endpoint_url,
                region_name=s.aws_region,
                aws_access_key_id=s.aws_access_key_id.get_secret_value() if s.aws_access_key_id else None,
                aws_secret_access_key=s.aws_secret_access_key.get_secret_value() if s.aws_secret_access_key else None,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=30),
            )
        return self._client

    async def fetch(self, uri: str) -> bytes:
        return await asyncio.to_thread(self._fetch, uri)

    def _fetch(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_uri(uri)
        try:
            obj = self._s3().get_object(Bucket=bucket, Key=key)
            if obj.get("ContentLength", 0) > self.max_bytes:
                raise PermanentDelivery(f"attachment_too_large: {obj['ContentLength']} bytes")
            return bytes(obj["Body"].read())
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "Unknown"))
            if code in MISSING_CODES:
                raise PermanentDelivery(f"attachment_missing: {code}") from e
            raise RetryableDelivery(f"s3:{code}") from e
        except BotoCoreError as e:
            raise RetryableDelivery(f"s3:{type(e).__name__}") from e


@dataclass
class MemoryAttachmentStore:
    """The twin: files by URI in a dict."""

    files: dict[str, bytes] = field(default_factory=dict)

    async def fetch(self, uri: str) -> bytes:
        split_uri(uri)
        try:
            return self.files[uri]
        except KeyError:
            raise PermanentDelivery("attachment_missing: NoSuchKey") from None

"""Build the raw MIME message for an outbound record.

Raw sending keeps the headers ours: Message-ID derived from the deterministic message id (so a
mail sent twice would at least thread as one), Reply-To, and the ``X-Tidings-*`` trace headers.
Display names and the subject were made single-line by the renderer; the email package encodes
non-ASCII text (RFC 2047) and refuses any header that still holds a line break.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from collections.abc import Sequence
from typing import Any


_UNFOLDED = SMTP.clone(max_line_length=998)


def _address(address: str, name: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def build_mime(mail: dict[str, Any], files: Sequence[tuple[dict[str, Any], bytes]] = ()) -> bytes:
    """The raw message; ``files`` are the mail's attachments with their fetched bytes."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(mail["from_address"], mail.get("from_name", ""))
    msg["To"] = _address(mail["to_address"], mail.get("to_name", ""))
    if mail.get("reply_to"):
        msg["Reply-To"] = mail["reply_to"]
    msg["Subject"] = mail["subject"]
    msg["Date"] = format_datetime(mail["created_at"])
    domain = mail["from_address"].rpartition("@")[2]
    msg["Message-ID"] = f"<{mail['message_id']}@{domain}>"
    for name, value in sorted(mail.get("headers", {}).items()):
        msg[name] = value
    msg.set_content(mail["text"], subtype="plain", charset="utf-8")
    msg.add_alternative(mail["html"], subtype="html", charset="utf-8")
    for attachment, data in files:
        maintype, _, subtype = attachment["content_type"].partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=attachment["filename"])
    # Set last: turning the message multipart moves every Content-* header into the first part.
    msg["Content-Language"] = mail["locale"]
    # The bodies were encoded by set_content under SMTP (lines <= 78). Headers are written
    # unfolded: the email package folds "... ist bestätigt" into "ist \r\n =?utf-8?q?...?=",
    # which readers unfold to a double space. 998 is RFC 5322's hard limit for a line.
    return msg.as_bytes(policy=_UNFOLDED)

"""Build the raw MIME message for an outbound record.

Raw sending keeps the headers ours: Message-ID derived from the deterministic message id (so a
mail sent twice would at least thread as one), Reply-To, and the ``X-Tidings-*`` trace headers.
Display names and the subject were made single-line by the renderer; non-ASCII text is encoded
as RFC 2047 encoded-words, and a header that still holds a line break is refused (it would let a
value add headers of its own).

Every header line stays within RFC 5322's 998 octets (``MAX_LINE``): a long ASCII value is folded
at its spaces (lines of about 78), and one with a run of more than ``MAX_WORD`` characters without
a space, which cannot be folded, is written as encoded-words instead (a display name or an
unstructured header; nothing else Tidings writes can be that long). Addresses in From, To and
Reply-To are written in their sendable form (``streams/domain/address.py``): an IDN domain in
ASCII (punycode), so every client can reply to it; an address with a non-ASCII local part cannot
be sent (``invalid_recipient``).

A mail without attachments (nearly every mail) is written directly: its headers, then its two
quoted-printable parts between boundaries, each header line folded by the same policy as the
email package's generator would fold it (``_POLICY.fold_binary``). Building the ``email.mime``
objects and running the generator over them for the same bytes took a fifth of the sender's GIL
time at 1,000 mails/s (py-spy, 2026-12-08). ``tests/unit/test_mime.py`` checks, mail by mail, that
both give the same bytes. Mails with attachments are still built with the email package's
``email.mime`` classes under its ``compat32`` policy, not ``EmailMessage``: the newer API parses
every header it is given back into a tree and refolds it, which cost 7.6 ms of CPU per mail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from email import encoders
from email.generator import BytesGenerator
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr
from io import BytesIO
from typing import Any

from streams.domain.address import AddressError, sendable
from streams.errors import PermanentDelivery


class _Unfolded(Compat32):
    """CRLF line ends, as SMTP wants, and no folding.

    Every value Tidings writes is ASCII by now (non-ASCII text became encoded-words, ``_words``),
    so it is folded here at its spaces, between encoded-words too; folding plain text in the middle
    of a subject reads back as a double space. compat32 would wrap each value in a ``Header`` and
    encode it again, the largest cost left in building a message.
    """

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii():
            line = f"{name}: {value}"
            if len(line) <= SOFT_LINE:
                return f"{line}{self.linesep}"
            return f"{fold(line, self.linesep)}{self.linesep}"
        return super()._fold(name, value, sanitize)  # type: ignore[misc]  # Compat32._fold exists but typeshed omits it


# mangle_from_ off: compat32 writes a body line that starts with "From " as ">From ", the escape of
# mbox files; a mail to SES is not an mbox, and the reader saw the ">".
_POLICY = _Unfolded(linesep="\r\n", max_line_length=0, mangle_from_=False)
MAX_LINE = 998  # RFC 5322's hard limit for one line
SOFT_LINE = 78  # RFC 5322's recommended line length, where folding aims
# A run without a space longer than this cannot be folded under MAX_LINE with its header name;
# such a value is written as encoded-words, which split anywhere.
MAX_WORD = 900


def fold(line: str, linesep: str = "\r\n") -> str:
    """``line`` folded at spaces (before a space, as RFC 5322 folds) into lines of about ``SOFT_LINE``."""
    out: list[str] = []
    name, _, value = line.partition(": ")
    words = value.split(" ")
    # Never fold between the header name and the first word: a value must not start with a space.
    words[0] = f"{name}: {words[0]}"
    current = ""
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        if current and len(current) + len(piece) > SOFT_LINE and word:
            out.append(current)
            current = piece
        else:
            current += piece
    out.append(current)
    return linesep.join(out)


def _unfoldable(value: str) -> bool:
    return any(len(word) > MAX_WORD for word in value.split(" "))


def _single_line(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise PermanentDelivery(f"malformed_mail: the {name} header holds a line break")
    return value


# Raw bytes per encoded-word: 60 base64 characters, 72 with ``=?utf-8?b?`` and ``?=`` (RFC 2047
# allows 75), so that a word and a header name share a line of about SOFT_LINE.
_WORD_BYTES = 45


def _words(value: str) -> str:
    """``value`` as RFC 2047 base64 encoded-words separated by spaces, no character split between two.

    Written here rather than with ``email.header.Header``, which measures the quoted-printable
    length of every prefix of the value to choose an encoding: 0.2 ms a header, half of building
    a message (two per mail with a German subject and name). Base64 words have a fixed length, and
    readers ignore the space between two adjacent encoded-words (RFC 2047 6.2), so the words fold
    at those spaces like any ASCII value.
    """
    raw = value.encode("utf-8")
    words = []
    start = 0
    while start < len(raw):
        end = min(start + _WORD_BYTES, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:  # a UTF-8 continuation byte: not a character's start
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(raw[start:end]).decode('ascii')}?=")
        start = end
    return " ".join(words)


def _text(value: str, name: str) -> str:
    """An unstructured header value: as is when ASCII and foldable, else RFC 2047 encoded-words."""
    _single_line(name, value)
    if value.isascii() and not _unfoldable(value):
        return value
    return _words(value)


def _ascii_address(address: str, header: str) -> str:
    _single_line(header, address)
    try:
        return sendable(address)
    except AddressError as e:
        reason = "invalid_recipient" if header == "To" else "malformed_mail"
        raise PermanentDelivery(f"{reason}: the {header} address cannot be sent: {e}") from None


def _address(address: str, name: str, header: str) -> str:
    address = _ascii_address(address, header)
    name = _single_line(header, name)
    if name and (not name.isascii() or _unfoldable(name)):
        return f"{_words(name)} <{address}>"
    return formataddr((name, address))


def _body(text: str, subtype: str) -> MIMENonMultipart:
    """A quoted-printable UTF-8 part: readable in the raw source, and mostly ASCII text stays short.

    Encoded by ``binascii`` (C, lines of at most 76 with soft breaks), not by the email package's
    pure-Python quoted-printable encoder, which took a quarter of building a message.
    """
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(_qp(text).decode("ascii"))
    del part["MIME-Version"]  # once, on the message
    return part


def _boundary(mail: dict[str, Any], kind: str) -> str:
    """A multipart boundary that no part can contain, the same for the same mail.

    Every part is quoted-printable or base64, and neither can hold ``=_``: in quoted-printable
    ``=`` is followed by two hex digits or a line end, and ``_`` is not in base64's alphabet. The
    generator would otherwise draw a random boundary and compile a regular expression to search
    the parts for it, a third of building a message; derived from the message id, a mail built
    twice is the same bytes.
    """
    digest = hashlib.sha256(str(mail["message_id"]).encode("utf-8")).hexdigest()[:24]
    return f"=_tidings_{kind}_{digest}"


def _headers(mail: dict[str, Any]) -> list[tuple[str, str]]:
    """The message's own headers, in the order they are written, after the MIME ones."""
    headers = [("From", _address(mail["from_address"], mail.get("from_name", ""), "From")),
               ("To", _address(mail["to_address"], mail.get("to_name", ""), "To"))]
    if mail.get("reply_to"):
        headers.append(("Reply-To", _ascii_address(mail["reply_to"], "Reply-To")))
    headers.append(("Subject", _text(mail["subject"], "Subject")))
    headers.append(("Date", format_datetime(mail["created_at"])))
    domain = _ascii_address(mail["from_address"], "From").rpartition("@")[2]
    headers.append(("Message-ID", f"<{_single_line('Message-ID', mail['message_id'])}@{domain}>"))
    headers.extend((name, _text(value, name)) for name, value in sorted(mail.get("headers", {}).items()))
    headers.append(("Content-Language", _single_line("Content-Language", mail["locale"])))
    return headers


def build_mime(mail: dict[str, Any], files: Sequence[tuple[dict[str, Any], bytes]] = ()) -> bytes:
    """The raw message; ``files`` are the mail's attachments with their fetched bytes."""
    headers = _headers(mail)
    if files:
        return _with_email_package(mail, headers, files)
    boundary = _boundary(mail, "alt")
    fold = _POLICY.fold_binary
    out = [fold("Content-Type", f'multipart/alternative; boundary="{boundary}"'), _MIME_VERSION]
    out.extend(fold(name, value) for name, value in headers)
    out.append(f"\r\n--{boundary}\r\n".encode("ascii"))  # the blank line ending the headers, the first boundary
    out.append(_part(mail["text"], "plain"))
    out.append(f"\r\n--{boundary}\r\n".encode("ascii"))
    out.append(_part(mail["html"], "html"))
    out.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


_MIME_VERSION = _POLICY.fold_binary("MIME-Version", "1.0")
_PART_HEADERS = {subtype: _POLICY.fold_binary("Content-Type", f'text/{subtype}; charset="utf-8"')
                 + _POLICY.fold_binary("Content-Transfer-Encoding", "quoted-printable") + b"\r\n"
                 for subtype in ("plain", "html")}


def _part(text: str, subtype: str) -> bytes:
    """What the generator writes for ``_body(text, subtype)``: its headers, a blank line, the payload."""
    # The generator ends every line of a payload (at each CRLF, lone CR or LF) with the policy's CRLF.
    return _PART_HEADERS[subtype] + _qp(text).replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def _qp(text: str) -> bytes:
    """``text`` as quoted-printable UTF-8 (binascii, in C: lines of at most 76 with soft breaks)."""
    return binascii.b2a_qp(text.encode("utf-8"), istext=True)


def _with_email_package(mail: dict[str, Any], headers: list[tuple[str, str]],
                        files: Sequence[tuple[dict[str, Any], bytes]]) -> bytes:
    """The message built with the email package: with attachments (and, in tests, as the reference)."""
    body = MIMEMultipart("alternative", boundary=_boundary(mail, "alt"),
                         _subparts=[_body(mail["text"], "plain"), _body(mail["html"], "html")])
    msg: MIMEBase = body
    if files:
        del body["MIME-Version"]
        msg = MIMEMultipart("mixed", boundary=_boundary(mail, "mix"), _subparts=[body])
        for attachment, data in files:
            maintype, _, subtype = attachment["content_type"].partition("/")
            part = MIMENonMultipart(maintype or "application", subtype or "octet-stream")
            del part["MIME-Version"]
            part.set_payload(data)
            encoders.encode_base64(part)
            filename = _single_line("filename", attachment["filename"])
            part.add_header("Content-Disposition", "attachment",
                            filename=filename if filename.isascii() else ("utf-8", "", filename))
            msg.attach(part)
    for name, value in headers:
        msg[name] = value
    out = BytesIO()
    BytesGenerator(out, policy=_POLICY).flatten(msg)
    return out.getvalue()

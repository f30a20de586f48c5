from __future__ import annotations

import email
import email.header
import email.policy

import pytest

from streams.delivery import mime
from streams.delivery.mime import build_mime
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.errors import PermanentDelivery
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from tests.unit.conftest import NOW

MAIL = {
    "message_id": "0123abcd", "tenant_id": "t", "pack": "storage", "trigger": "booking.created", "entity_id": "BK-1",
    "locale": "de", "from_address": "buchung@lagerhaus-nord.example", "from_name": "Lagerhaus Nord",
    "reply_to": "service@lagerhaus-nord.example", "to_address": "jana@example.org", "to_name": "Jana Müller",
    "subject": "Ihre Buchung ist bestätigt", "html": "<p>Hallo</p>", "text": "Hallo", "headers": {"X-Tidings-Tenant": "t"},
    "source_event_id": "e", "source_topic": "x", "source_timestamp": NOW, "created_at": NOW,
}


def test_raw_message_has_our_headers_and_both_parts() -> None:
    msg = email.message_from_bytes(build_mime(MAIL), policy=email.policy.default)
    assert msg["Message-ID"] == "<0123abcd@lagerhaus-nord.example>"
    assert msg["From"] == "Lagerhaus Nord <buchung@lagerhaus-nord.example>"
    assert msg["To"] == "Jana Müller <jana@example.org>"
    assert msg["Reply-To"] == "service@lagerhaus-nord.example"
    assert msg["Subject"] == "Ihre Buchung ist bestätigt"
    assert msg["Content-Language"] == "de"
    assert msg["X-Tidings-Tenant"] == "t"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().strip() == "Hallo"
    assert msg.get_body(("html",)).get_content().strip() == "<p>Hallo</p>"


def test_lines_end_in_crlf_as_smtp_wants() -> None:
    raw = build_mime(MAIL)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_a_long_subject_with_umlauts_survives_the_round_trip_exactly() -> None:
    # The email package's own folding turns this into "ist  bestätigt" (two spaces) for readers.
    subject = "Ihr Termin mit Markus Weber am 02.12.2026 um 10:00 Uhr ist bestätigt"
    for prefix in ("", "Ä", "Zusätzlich: ", "x" * 40):
        mail = {**MAIL, "subject": prefix + subject, "to_name": "Lena Schäfer von der Großen Straße"}
        msg = email.message_from_bytes(build_mime(mail), policy=email.policy.default)
        assert msg["Subject"] == prefix + subject
        assert msg["To"] == "Lena Schäfer von der Großen Straße <jana@example.org>"


def test_body_lines_stay_within_the_quoted_printable_limit() -> None:
    raw = build_mime({**MAIL, "text": "ä" * 500, "html": "<p>" + "ö" * 500 + "</p>"})
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 78


@pytest.mark.parametrize("field", ["subject", "to_name", "from_name", "reply_to", "message_id", "locale"])
def test_a_line_break_in_any_header_value_fails_the_mail_instead_of_adding_headers(field: str) -> None:
    with pytest.raises(PermanentDelivery, match="malformed_mail"):
        build_mime({**MAIL, field: "harmless\r\nBcc: victim@example.org"})


def test_a_line_break_in_an_extra_header_or_attachment_name_fails_the_mail() -> None:
    with pytest.raises(PermanentDelivery, match="malformed_mail"):
        build_mime({**MAIL, "headers": {"X-Tidings-Tenant": "t\nBcc: victim@example.org"}})
    attachment = {"uri": "s3://b/k.pdf", "filename": "a.pdf\r\nBcc: x@example.org", "content_type": "application/pdf"}
    with pytest.raises(PermanentDelivery, match="malformed_mail"):
        build_mime(MAIL, [(attachment, b"%PDF")])


def test_a_non_ascii_attachment_name_survives_the_round_trip() -> None:
    attachment = {"uri": "s3://b/k.pdf", "filename": "Rechnung-März.pdf", "content_type": "application/pdf"}
    msg = email.message_from_bytes(build_mime(MAIL, [(attachment, b"%PDF")]), policy=email.policy.default)
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "Rechnung-März.pdf"
    assert part.get_content() == b"%PDF"


def test_mime_version_is_declared_once_on_the_message() -> None:
    assert build_mime(MAIL).count(b"MIME-Version:") == 1


@pytest.mark.parametrize(
    "change",
    [
        {"from_name": "N" * 10_000},
        {"from_name": "Lager " * 2_000},
        {"to_name": "Jänä " * 3_000},
        {"subject": "Ihre Buchung " * 1_000},
        {"subject": "x" * 5_000},
        {"subject": "ü" * 5_000},
        {"headers": {"X-Tidings-Tenant": "y" * 5_000, "X-Tidings-Trigger": "a b " * 2_000}},
    ],
)
def test_no_header_line_is_longer_than_998_octets_and_values_read_back(change: dict[str, object]) -> None:
    raw = build_mime({**MAIL, **change})
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for field, value in change.items():
        if field == "subject":
            assert msg["Subject"].strip() == value.strip()
        elif field == "headers":
            for name, text in value.items():  # type: ignore[attr-defined]
                assert msg[name].strip() == text.strip()
        else:
            header = "From" if field == "from_name" else "To"
            # Python's parser keeps a space between adjacent encoded-words of a display name (RFC 2047
            # says to drop it); compare the characters, not the spacing.
            shown = msg[header].addresses[0].display_name
            assert shown.replace(" ", "") == str(value).replace(" ", "")


def test_idn_domains_are_sent_in_ascii_in_every_address_header() -> None:
    mail = {**MAIL, "from_address": "buchung@lagerhäuser.example", "reply_to": "service@lagerhäuser.example",
            "to_address": "Jana@bücher.example"}
    raw = build_mime(mail)
    assert raw.split(b"\r\n\r\n", 1)[0].isascii()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "buchung@xn--lagerhuser-v5a.example"
    assert msg["Reply-To"].addresses[0].addr_spec == "service@xn--lagerhuser-v5a.example"
    assert msg["To"].addresses[0].addr_spec == "Jana@xn--bcher-kva.example"
    assert msg["Message-ID"].endswith("@xn--lagerhuser-v5a.example>")


def test_a_non_ascii_local_part_cannot_be_sent() -> None:
    with pytest.raises(PermanentDelivery, match="^invalid_recipient: "):
        build_mime({**MAIL, "to_address": "jürgen@example.org"})


@pytest.mark.parametrize("text", [
    "Grüße\nZeile mit Leerzeichen am Ende   \nTab am Ende\t\n= Gleichheitszeichen =3D\n" + "x" * 200 + "\n" + "ü" * 100,
    "Windows\r\nZeilen\r\n\r\nund ein einzelnes \r mitten drin",
    "€ 4-byte 😀 " * 40 + "\n. a dot line\nFrom the start of a line",
    "",
])
def test_both_bodies_read_back_exactly_and_stay_within_the_line_limit(text: str) -> None:
    raw = build_mime({**MAIL, "text": text, "html": f"<p>{text}</p>"})
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert max(len(line) for line in body.split(b"\r\n")) <= 78
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    # A reader gets the lines back with its own line ends: compare them, not the CR or LF.
    for part, expected in ((msg.get_body(("plain",)), text), (msg.get_body(("html",)), f"<p>{text}</p>")):
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"
        assert part.get_content().splitlines() == expected.splitlines()


@pytest.mark.parametrize("subject", [
    "ä" * 60,  # 2-byte characters across the 45-byte word boundary
    "x" + "€" * 40,  # 3-byte, starting off the boundary
    "😀" * 30,  # 4-byte
    "Termin bestätigt 😀 für Zoë, 東京 " * 5,
])
def test_encoded_words_never_split_a_character_and_read_back_exactly(subject: str) -> None:
    raw = build_mime({**MAIL, "subject": subject, "to_name": subject[:50]})
    head = raw.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998
        for word in line.split(b" "):
            if word.startswith(b"=?utf-8?b?"):
                assert len(word) <= 75  # RFC 2047's limit for one encoded-word
                word.decode("ascii")
                email.header.decode_header(word.decode("ascii"))[0][0].decode("utf-8")  # each word whole UTF-8
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == subject
    assert msg["To"].addresses[0].display_name.replace(" ", "") == subject[:50].replace(" ", "").strip()


def test_a_mail_built_twice_is_the_same_bytes() -> None:
    assert build_mime(MAIL) == build_mime(dict(MAIL))
    assert build_mime(MAIL) != build_mime({**MAIL, "message_id": "another"})


def test_a_body_quoting_the_boundary_cannot_end_its_part() -> None:
    first = build_mime(MAIL)
    boundary = email.message_from_bytes(first).get_boundary()
    assert boundary is not None and boundary.startswith("=_")
    hostile = f"before\n--{boundary}\nContent-Type: text/html\n\n<script>x</script>\n--{boundary}--\nafter"
    msg = email.message_from_bytes(build_mime({**MAIL, "text": hostile}), policy=email.policy.default)
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().splitlines() == hostile.splitlines()


def _by_email_package(mail: dict[str, object]) -> bytes:
    return mime._with_email_package(mail, mime._headers(mail), ())


@pytest.mark.parametrize("change", [
    {},
    {"text": "line one\r\nline two\rline three\nline four", "html": "<p>a</p>\r\n\r\n<p>b</p>\r"},
    {"text": "", "html": ""},
    {"text": "ends with a line break\n", "html": "\n\n<p>x</p>\n"},
    {"text": "From the warehouse\n.\n..\nx = 1\ttab \nspaces at the end   \n", "html": "<p>=3D</p>"},
    {"text": "ä" * 300 + "\n" + "x" * 200, "html": "<p>" + "ö" * 300 + "🙂" * 40 + "</p>"},
    {"subject": "w" * 1200, "to_name": "n" * 950, "from_name": ""},
    {"subject": "Ihr Termin mit Markus Weber am 02.12.2026 um 10:00 Uhr ist bestätigt", "to_name": ""},
    {"reply_to": None, "to_address": "kunde@bücher.example", "from_address": "info@größe.example"},
    {"headers": {"X-Note": "Grüße aus der Speicherstraße", "List-Unsubscribe": "<https://u.example/" + "t" * 300 + ">",
                 "X-Tidings-Tenant": "t", "X-Empty": ""}},
    {"locale": "de-CH", "message_id": "m" * 200},
], ids=lambda change: ",".join(change) or "plain")
def test_the_direct_writer_gives_the_email_packages_bytes(change: dict[str, object]) -> None:
    # build_mime writes a mail without attachments itself; the email package's generator is the reference.
    mail = {**MAIL, **change}
    assert build_mime(mail) == _by_email_package(mail)


def test_every_packs_sample_mail_is_written_as_the_email_package_writes_it() -> None:
    catalog, renderer = Catalog.load(), Renderer(REPO_ROOT / "templates")
    written = 0
    for tenant in TenantDirectory.load(REPO_ROOT / "deploy" / "tenants"):
        for event_type in catalog.samples:
            event = sample_event(catalog.samples, event_type, tenant.tenant_id, now=NOW)
            for firing in event_firings(event_type, event, catalog, tenant):
                mail = renderer.render(firing, tenant, event, Source("t", "t", NOW), NOW).record
                assert build_mime(mail) == _by_email_package(mail), f"{tenant.tenant_id} {firing.trigger.key}"
                written += 1
    assert written >= 50  # every seed tenant's event triggers, not a vacuous loop

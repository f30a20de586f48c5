"""Suppression without a broker: the list and its records, SES and unsubscribe feedback, the
one-click token, the List-Unsubscribe headers and the tenant rule that requires them."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
from typing import Any

import pytest

from streams.delivery.ledger import suppressed_entry
from streams.delivery.mime import build_mime
from streams.delivery.policy import Action, decide
from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.domain.token import BadToken, TokenSigner
from streams.errors import RejectedInput
from streams.rendering.render import unsubscribe_headers
from streams.settings import REPO_ROOT
from streams.suppression.feedback import UNSUBSCRIBE_EVENT, ses_feedback, unsubscribe_feedback
from streams.suppression.model import Suppression, SuppressionList, merge, normalize_address
from streams.tenants.validate import model_problems, pack_problems
from tests.unit.conftest import NOW

T = "lagerhaus-nord"
SECRET = "unit-test-unsubscribe-secret"


def _entry(address: str, reason: str = "bounce", tenant: str = T) -> Suppression:
    scope = "non_transactional" if reason == "unsubscribe" else "all"
    return Suppression(tenant, address, reason, scope, NOW, "test")  # type: ignore[arg-type]


def _known(tenant_id: str) -> bool:
    return tenant_id in (T, "boxit-london")


def _ses(event_type: str, *, tenant: str | None = T, **body: Any) -> bytes:
    mail: dict[str, Any] = {"timestamp": "2026-11-23T09:00:00.000Z", "messageId": "0100-x", "destination": ["a@example.org"]}
    if tenant is not None:
        mail["tags"] = {"ses:configuration-set": ["tidings"], "tenant": [tenant], "trigger": ["storage-booking_created"]}
    return json.dumps({"eventType": event_type, "mail": mail, **body}).encode()


def _bounce(bounce_type: str, *addresses: str, tenant: str | None = T) -> bytes:
    recipients = [{"emailAddress": a, "action": "failed", "status": "5.1.1", "diagnosticCode": "smtp; 550 user unknown"}
                  for a in addresses]
    return _ses("Bounce", tenant=tenant, bounce={
        "bounceType": bounce_type, "bounceSubType": "General", "bouncedRecipients": recipients,
        "timestamp": "2026-11-23T09:00:05.000Z", "feedbackId": "f-1",
    })


def _complaint(*addresses: str, feedback_type: str | None = "abuse") -> bytes:
    body: dict[str, Any] = {"complainedRecipients": [{"emailAddress": a} for a in addresses],
                            "timestamp": "2026-11-23T10:00:00.000Z", "feedbackId": "f-2"}
    if feedback_type:
        body["complaintFeedbackType"] = feedback_type
    return _ses("Complaint", complaint=body)


# ---- the list -----------------------------------------------------------------------------------


def test_a_bounce_stops_every_mail_and_an_unsubscribe_only_the_non_transactional_ones() -> None:
    entries = SuppressionList([_entry("gone@example.org"), _entry("optout@example.org", "unsubscribe")])
    assert entries.lookup(T, "gone@example.org", transactional=True).reason == "bounce"  # type: ignore[union-attr]
    assert entries.lookup(T, "gone@example.org", transactional=False) is not None
    assert entries.lookup(T, "optout@example.org", transactional=True) is None
    assert entries.lookup(T, "optout@example.org", transactional=False).reason == "unsubscribe"  # type: ignore[union-attr]
    assert entries.lookup(T, "other@example.org", transactional=False) is None


def test_a_suppression_belongs_to_one_tenant() -> None:
    entries = SuppressionList([_entry("gone@example.org")])
    assert entries.lookup("boxit-london", "gone@example.org", transactional=False) is None


def test_one_address_is_one_suppression_whatever_its_spelling() -> None:
    """The address rule (streams/domain/address.py): identity is the lower-cased ASCII form."""
    entries = SuppressionList()
    # A bounce for Jana.Mueller@ is written under the identity and stops every spelling.
    key, value = Suppression(T, normalize_address("Jana.Mueller@Bücher.Example") or "", "bounce", "all", NOW).encode()
    assert key == f"{T}/jana.mueller@xn--bcher-kva.example".encode()
    assert entries.apply_record(key, value).outcome == "applied"
    for spelling in ("jana.mueller@bücher.example", "JANA.MUELLER@xn--bcher-kva.example", "Jana.Mueller@BÜCHER.example"):
        assert entries.lookup(T, spelling, transactional=True) is not None, spelling
    # A record written before the rule (keyed as written, Unicode domain) is read and held under the identity.
    legacy = SuppressionList()
    old_key = f"{T}/Jana@bücher.example".encode()
    old_value = json.dumps({"tenant_id": T, "address": "Jana@bücher.example", "reason": "bounce", "scope": "all", "at": NOW.isoformat()})
    assert legacy.apply_record(old_key, old_value.encode()).outcome == "applied"
    assert legacy.lookup(T, "jana@xn--bcher-kva.example", transactional=True) is not None
    assert legacy.apply_record(old_key, None).outcome == "removed"
    assert legacy.lookup(T, "jana@bücher.example", transactional=True) is None
    # A key that matches neither form is still refused.
    assert entries.apply_record(f"{T}/other@example.org".encode(), value).outcome == "rejected"


def test_a_record_that_kills_a_parser_is_rejected_with_a_reason() -> None:
    entries = SuppressionList()
    nested = b"[" * 100_000 + b"]" * 100_000
    update = entries.apply_record(f"{T}/a@example.org".encode(), nested)
    assert update.outcome == "rejected" and update.reason in ("invalid", "check_failed")
    assert entries.apply_record(*_entry("a@example.org").encode()).outcome == "applied"


def test_records_apply_replace_and_a_tombstone_lifts() -> None:
    entries = SuppressionList()
    key, value = _entry("a@example.org", "unsubscribe").encode()
    assert entries.apply_record(key, value).reason == "unsubscribe"
    assert entries.apply_record(*_entry("a@example.org", "complaint").encode()).reason == "complaint"
    assert entries.lookup(T, "a@example.org", transactional=True).reason == "complaint"  # type: ignore[union-attr]
    assert entries.apply_record(key, None).outcome == "removed"
    assert entries.lookup(T, "a@example.org", transactional=False) is None
    assert len(entries) == 0


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        (None, b"{}", "without a key"),
        (b"\xff/a@example.org", _entry("a@example.org").encode()[1], "not UTF-8"),
        (b"lagerhaus-nord/a@example.org", b"\xff\xfe", "not JSON"),
        (b"lagerhaus-nord/a@example.org", b"not json", "not JSON"),
        (b"lagerhaus-nord/a@example.org", b"[1, 2]", "not a JSON object"),
        (b"lagerhaus-nord/a@example.org", b'{"tenant_id": "lagerhaus-nord"}', "missing or not text: address"),
        (b"boxit-london/a@example.org", None, ""),  # a tombstone of something never held: harmless
        (b"lagerhaus-nord/b@example.org", _entry("a@example.org").encode()[1], "do not match the record key"),
        (b"lagerhaus-nord/a@example.org", _entry("a@example.org").encode()[1].replace(b'"bounce"', b'"spite"'), "reason must"),
        (b"lagerhaus-nord/a@example.org", _entry("a@example.org").encode()[1].replace(b'"all"', b'"most"'), "scope must"),
        (b"noslash", None, "tombstone without"),
    ],
)
def test_an_unusable_record_changes_nothing(key: bytes | None, value: bytes | None, says: str) -> None:
    entries = SuppressionList([_entry("a@example.org")])
    update = entries.apply_record(key, value)
    assert update.outcome == ("removed" if not says else "rejected")
    assert says in update.detail
    assert entries.lookup(T, "a@example.org", transactional=True) is not None


def test_an_unsubscribe_never_narrows_a_bounce() -> None:
    bounce, unsubscribe = _entry("a@example.org"), _entry("a@example.org", "unsubscribe")
    assert merge(bounce, unsubscribe) is None
    assert merge(unsubscribe, bounce) == bounce
    assert merge(None, unsubscribe) == unsubscribe


def test_a_suppressed_mail_is_final_in_the_ledger() -> None:
    for redrive in (False, True):  # not even a re-drive sends it
        assert decide(suppressed_entry("bounce", NOW), redrive=redrive, policy="resend") is Action.SKIP_DUPLICATE


# ---- SES feedback -------------------------------------------------------------------------------


def test_a_permanent_bounce_suppresses_each_bounced_recipient_for_all_mail() -> None:
    result = ses_feedback(_bounce("Permanent", "a@Example.org", "b@example.org"), _known, NOW)
    assert result.event_type == "Bounce"
    assert [(s.tenant_id, s.address, s.reason, s.scope) for s in result.suppressions] == [
        (T, "a@example.org", "bounce", "all"), (T, "b@example.org", "bounce", "all"),
    ]
    assert result.suppressions[0].at == dt.datetime(2026, 11, 23, 9, 0, 5, tzinfo=dt.timezone.utc)
    assert "550" not in result.suppressions[0].detail  # diagnostics may quote the address: not kept


@pytest.mark.parametrize("bounce_type", ["Transient", "Undetermined"])
def test_a_transient_or_undetermined_bounce_suppresses_nothing(bounce_type: str) -> None:
    result = ses_feedback(_bounce(bounce_type, "a@example.org"), _known, NOW)
    assert result.suppressions == [] and bounce_type in result.ignored


def test_a_complaint_suppresses_all_mail_unless_it_says_not_spam() -> None:
    result = ses_feedback(_complaint("c@example.org"), _known, NOW)
    assert [(s.address, s.reason, s.scope) for s in result.suppressions] == [("c@example.org", "complaint", "all")]
    assert ses_feedback(_complaint("c@example.org", feedback_type=None), _known, NOW).suppressions
    assert ses_feedback(_complaint("c@example.org", feedback_type="not-spam"), _known, NOW).suppressions == []


@pytest.mark.parametrize("event_type", ["Delivery", "Send", "Open", "Click", "DeliveryDelay", "Reject"])
def test_other_event_types_are_ignored(event_type: str) -> None:
    result = ses_feedback(_ses(event_type, delivery={}), _known, NOW)
    assert (result.event_type, result.suppressions) == (event_type, [])


def test_an_unknown_event_type_is_ignored_under_a_fixed_label() -> None:
    assert ses_feedback(_ses("Something\nNew"), _known, NOW).event_type == "unknown"


def test_the_sns_wrapper_is_unwrapped() -> None:
    wrapped = json.dumps({"Type": "Notification", "MessageId": "m", "Message": _bounce("Permanent", "a@example.org").decode()})
    assert [s.address for s in ses_feedback(wrapped.encode(), _known, NOW).suppressions] == ["a@example.org"]


@pytest.mark.parametrize(
    ("value", "reason", "says"),
    [
        (b"", "empty", "empty"),
        (None, "empty", "empty"),
        (b"\x00\x01 not json", "not_json", "not JSON"),
        (b'{"Type": "Notification", "Message": "{broken"}', "not_json", "SNS"),
        (b"[1, 2, 3]", "not_ses_event", "eventType"),
        (b'{"hello": "world"}', "not_ses_event", "eventType"),
        (_bounce("Permanent", "a@example.org", tenant=None), "missing_field", "mail.tags.tenant"),
        (_bounce("Permanent", "a@example.org", tenant="no-such-tenant"), "unknown_tenant", "not configured"),
        (_ses("Bounce"), "missing_field", "bounce object"),
        (_bounce("Permanent"), "missing_field", "bouncedRecipients"),
        (_ses("Complaint", complaint={"complainedRecipients": "a@example.org"}), "missing_field", "complainedRecipients"),
    ],
)
def test_unusable_ses_records_are_rejected_with_a_reason(value: bytes | None, reason: str, says: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        ses_feedback(value, _known, NOW)
    assert caught.value.reason == reason
    assert says in caught.value.detail
    assert "a@example.org" not in caught.value.detail


def test_a_recipient_that_is_no_address_is_counted_and_the_others_apply() -> None:
    result = ses_feedback(_bounce("Permanent", "not an address", "ok@example.org", "x\r\nBcc: y@z"), _known, NOW)
    assert [s.address for s in result.suppressions] == ["ok@example.org"]
    assert result.invalid_recipients == 2


# ---- unsubscribes -------------------------------------------------------------------------------


def _unsubscribed(tenant: str = T, address: str = "Reader@Example.org") -> dict[str, Any]:
    return {"envelope": {"event_id": "e", "tenant_id": tenant, "occurred_at": NOW, "producer": "p"},
            "email": address, "source": "preference_centre"}


def test_an_unsubscribe_suppresses_only_non_transactional_mail(codec) -> None:  # type: ignore[no-untyped-def]
    record = codec.decode(codec.encode(UNSUBSCRIBE_EVENT, _unsubscribed())).record
    (entry,) = unsubscribe_feedback(record, _known).suppressions
    assert (entry.tenant_id, entry.address, entry.reason, entry.scope, entry.at) == (
        T, "reader@example.org", "unsubscribe", "non_transactional", NOW,
    )
    assert "preference_centre" in entry.detail


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_unsubscribed(tenant="no-such-tenant"), "unknown_tenant"),
        (_unsubscribed(tenant=""), "missing_field"),
        (_unsubscribed(address="no address"), "invalid_recipient"),
    ],
)
def test_an_unusable_unsubscribe_is_rejected(record: dict[str, Any], reason: str) -> None:
    with pytest.raises(RejectedInput) as caught:
        unsubscribe_feedback(record, _known)
    assert caught.value.reason == reason


# ---- the one-click token ------------------------------------------------------------------------


def test_a_token_round_trips_and_shows_no_address() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(T, "jana.mueller@example.org")
    assert signer.verify(token) == (T, "jana.mueller@example.org")
    assert TokenSigner(SECRET).verify(token) == (T, "jana.mueller@example.org")  # another worker, same secret
    assert "jana" not in token and "example" not in token and T not in token
    assert all(c.isalnum() or c in "-_" for c in token)  # one URL path segment, nothing to escape


def test_forged_altered_truncated_and_foreign_tokens_are_refused() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue(T, "a@example.org")
    flipped = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    for bad in (flipped, token[:-1], token[:20], "", "A" * 5000, "not-a-token", token + "é",
                TokenSigner("another-deployment-secret").issue(T, "a@example.org")):
        with pytest.raises(BadToken):
            signer.verify(bad)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        TokenSigner("short")


# ---- List-Unsubscribe headers -------------------------------------------------------------------


def _mail(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "message_id": "m1", "from_address": "buchung@lagerhaus-nord.example", "from_name": "Lagerhaus Nord",
        "to_address": "jana@example.org", "to_name": "Jana", "subject": "Hallo", "html": "<p>x</p>", "text": "x",
        "headers": headers, "created_at": NOW, "locale": "de",
    }


def test_non_transactional_mails_carry_one_click_list_unsubscribe_that_fits_in_mime(tenants: TenantDirectory) -> None:
    from streams.rendering.render import Renderer

    tenant = tenants.get(T)
    assert tenant is not None and tenant.unsubscribe is not None
    signer = TokenSigner(SECRET)
    renderer = Renderer(REPO_ROOT / "templates", unsubscribe_tokens=signer)
    headers = renderer._headers(tenant, "storage/booking.after_created", False, "jana@example.org")
    https, mailto = (part.strip().strip("<>") for part in headers["List-Unsubscribe"].split(","))
    assert https.startswith(f"{tenant.unsubscribe.base_url}/unsubscribe/")
    assert signer.verify(https.rsplit("/", 1)[1]) == (T, "jana@example.org")
    assert mailto == f"mailto:{tenant.unsubscribe.mailto}?subject=unsubscribe"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "jana" not in headers["List-Unsubscribe"]

    parsed = email.message_from_bytes(build_mime(_mail(headers)), policy=email.policy.default)
    assert parsed["List-Unsubscribe"] == headers["List-Unsubscribe"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw_line = next(line for line in build_mime(_mail(headers)).split(b"\r\n") if line.startswith(b"List-Unsubscribe:"))
    assert len(raw_line) <= 998


def test_transactional_mails_carry_no_list_unsubscribe(tenants: TenantDirectory) -> None:
    from streams.rendering.render import Renderer

    renderer = Renderer(REPO_ROOT / "templates", unsubscribe_tokens=TokenSigner(SECRET))
    headers = renderer._headers(tenants.get(T), "storage/booking.created", True, "jana@example.org")  # type: ignore[arg-type]
    assert not any(name.startswith("List-") for name in headers)


def test_without_a_secret_only_the_mailto_is_offered_and_no_one_click(tenants: TenantDirectory) -> None:
    headers = unsubscribe_headers(tenants.get(T), "jana@example.org", None)  # type: ignore[arg-type]
    assert headers == {"List-Unsubscribe": "<mailto:abmelden@lagerhaus-nord.example?subject=unsubscribe>"}


# ---- the tenant rule ----------------------------------------------------------------------------


def _tenant_data(tenants: TenantDirectory, tenant_id: str, **changes: Any) -> dict[str, Any]:
    return {**tenants.get(tenant_id).model_dump(mode="json"), **changes}  # type: ignore[union-attr]


def test_a_tenant_with_a_non_transactional_trigger_on_must_say_where_to_unsubscribe(tenants: TenantDirectory) -> None:
    tenant, problems = model_problems(_tenant_data(tenants, T, unsubscribe=None))
    assert tenant is not None and problems == []
    found = dict(pack_problems(tenant, Catalog.load(), REPO_ROOT / "templates"))
    assert "storage/booking.after_created" in found["unsubscribe"]
    assert "List-Unsubscribe" in found["unsubscribe"]

    triggers = {**_tenant_data(tenants, T)["triggers"], "storage/booking.after_created": {"enabled": False},
                "storage/booking.after_move_in": {"enabled": False}}
    tenant, _ = model_problems(_tenant_data(tenants, T, unsubscribe=None, triggers=triggers))
    assert "unsubscribe" not in dict(pack_problems(tenant, Catalog.load(), REPO_ROOT / "templates"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"base_url": "http://mail.example"}, "https"),
        ({"base_url": "https://mail.example/u?x=1"}, "without query"),
        ({"base_url": "https://mail.example/a>b"}, "without query"),
        ({"base_url": "https://mail.example/\r\nBcc: x"}, "without query"),
        ({"mailto": "not an address"}, "not an email address"),
        ({}, "set base_url"),
    ],
)
def test_a_bad_unsubscribe_setting_is_refused(tenants: TenantDirectory, setting: dict[str, str], says: str) -> None:
    tenant, problems = model_problems(_tenant_data(tenants, T, unsubscribe=setting))
    assert tenant is None
    assert any(field.startswith("unsubscribe") and says in message for field, message in problems), problems


def test_the_example_tenants_pass(tenants: TenantDirectory) -> None:
    for tenant in tenants:
        assert list(pack_problems(tenant, Catalog.load(), REPO_ROOT / "templates")) == [], tenant.tenant_id
    assert isinstance(tenants.get(T), Tenant)

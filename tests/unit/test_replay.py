"""The pure parts of tidings-replay: range bounds, record files, masking, the delivery decisions,
the summary, spans and times, and the shadow comparison."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest

from streams.errors import ConfigurationError
from streams.replay.cli import Progress, parse_span, parse_until
from streams.replay.kafka import Bound
from streams.replay.parallel import assign
from streams.replay.records import ReplayRecord, count_partitions, dump_record, load_record, read_file
from streams.replay.report import DUPLICATE, FIRED, SUPPRESSED, DeliveryDecisions, MailLine, Summary, mask
from streams.replay.shadow import CHANGED, FAILED, GONE, NEW, Mail, collect_deployed, compare, text_diff
from streams.suppression.model import Suppression, SuppressionList, scope_for

T0 = dt.datetime(2026, 12, 4, 10, 0, tzinfo=dt.timezone.utc)


def test_bounds_are_times_or_partition_offsets() -> None:
    assert Bound.parse(None) == Bound()
    assert Bound.parse("2026-12-04T10:00:00Z").at == T0
    assert Bound.parse("2026-12-04").at == dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc)  # UTC when no zone
    assert dict(Bound.parse("0:120,3:7").offsets) == {0: 120, 3: 7}
    with pytest.raises(ConfigurationError):
        Bound.parse("yesterday")
    with pytest.raises(ConfigurationError):
        Bound.parse("0:x")


def test_a_record_line_round_trips_bytes_and_nulls() -> None:
    record = ReplayRecord("t.storage.bookings", 2, 41, b"\x00key", b"\xc3\x01\xff", T0.timestamp())
    assert load_record(dump_record(record)) == record
    tombstone = ReplayRecord("t", 0, 1, None, None, T0.timestamp())
    assert load_record(dump_record(tombstone)) == tombstone
    with pytest.raises(ConfigurationError, match="f.jsonl:3"):
        load_record('{"partition": 1}', "f.jsonl:3")


def test_a_record_file_skips_blank_lines_and_names_the_line_that_is_not_a_record(tmp_path: Path) -> None:
    record = ReplayRecord("t.storage.bookings", 1, 7, b"k", b"v", T0.timestamp())
    path = tmp_path / "records.jsonl"
    path.write_text(dump_record(record) + "\n  \n" + dump_record(record) + "\n{not json\n")
    records = read_file(path)
    assert [next(records), next(records)] == [record, record]
    with pytest.raises(ConfigurationError, match=f"^{path}:4: not a record line"):
        next(records)


def test_masked_addresses_are_unreadable_but_tell_recipients_apart() -> None:
    a, b = mask("jane.doe@example.com"), mask("john.roe@example.com")
    assert a is not None and a.startswith("j***@example.com#") and "jane" not in a
    assert a != b
    assert mask("Jane.Doe@example.com") == a  # one recipient, one mask, whatever the case
    assert mask(None) is None


def _mail(mid: str = "m1", to: str = "jane@example.com", tenant: str = "boxit-london") -> dict[str, object]:
    return {"message_id": mid, "tenant_id": tenant, "to_address": to, "pack": "storage", "trigger": "booking.created"}


def test_delivery_decisions_are_the_senders_ledger_and_suppression_list() -> None:
    suppressions = SuppressionList([Suppression("boxit-london", "gone@example.com", "bounce", scope_for("bounce"), T0)])
    decide = DeliveryDecisions(suppressions)
    assert decide(_mail("m1"), T0) == (FIRED, None)
    assert decide(_mail("m1"), T0) == (DUPLICATE, None)  # the ledger holds it now
    assert decide(_mail("m2", "gone@example.com"), T0) == (SUPPRESSED, "bounce")
    assert decide(_mail("m2", "gone@example.com"), T0) == (DUPLICATE, None)  # suppressed is final, as in the sender
    assert decide(_mail("m3", "gone@example.com", tenant="lagerhaus-nord"), T0) == (FIRED, None)  # another tenant's list


def test_a_suppression_added_later_is_seen_by_the_next_decision() -> None:
    """Tenants without entries skip the lookup; the set of such tenants follows the list."""
    suppressions = SuppressionList()
    decide = DeliveryDecisions(suppressions)
    assert decide(_mail("m1", "gone@example.com"), T0) == (FIRED, None)
    suppressions.apply_record(*Suppression("boxit-london", "gone@example.com", "bounce", scope_for("bounce"), T0).encode())
    assert decide(_mail("m2", "Gone@Example.com"), T0) == (SUPPRESSED, "bounce")  # the lookup normalises the address
    assert decide(_mail("m3", "other@example.com"), T0) == (FIRED, None)


def test_a_mail_line_is_its_set_fields_without_bodies() -> None:
    line = MailLine(FIRED, "m1", "boxit-london", "storage/booking.created", "j***@example.com#1a2b3c", "de",
                    "Buchung bestätigt", source="t[1]@2", at="2026-12-04T10:00:00+00:00", text="body", html="<p>body</p>")
    assert json.loads(line.json()) == {
        "why": FIRED, "message_id": "m1", "tenant": "boxit-london", "trigger": "storage/booking.created",
        "recipient": "j***@example.com#1a2b3c", "locale": "de", "subject": "Buchung bestätigt", "source": "t[1]@2",
        "at": "2026-12-04T10:00:00+00:00",
    }
    assert "bestätigt" in line.json()  # UTF-8, not \u escapes
    assert line.json_bytes() == line.json().encode()


def test_processes_get_partitions_largest_first_to_the_least_loaded() -> None:
    assert assign({0: 10, 1: 10, 2: 10, 3: 10}, 2) == [[0, 2], [1, 3]]
    assert assign({0: 100, 1: 10, 2: 10, 3: 10}, 2) == [[0], [1, 2, 3]]
    assert assign({0: 5, 3: 5}, 4) == [[0], [3]]  # no process without a partition
    assert assign({2: 7, 0: 7, 1: 7}, 2) == assign({0: 7, 1: 7, 2: 7}, 2)  # the same split for the same sizes


def test_a_record_file_is_counted_per_partition_without_decoding(tmp_path: Path) -> None:
    records = [ReplayRecord("t", p, o, None, b"x", 1.0) for p, o in [(0, 1), (3, 1), (3, 2)]]
    file = tmp_path / "r.jsonl"
    file.write_text("".join(dump_record(r) + "\n" for r in records) + '\n{"topic": "t", "timestamp": 1}\n')
    assert count_partitions(file) == {0: 2, 3: 2}  # the line without a partition is partition 0, as it is read


def test_summary_counts_per_trigger_and_why_and_per_day() -> None:
    s = Summary()
    for why, day in [(FIRED, "2026-12-04"), (FIRED, "2026-12-05"), (DUPLICATE, "2026-12-05")]:
        s.add(MailLine(why, "m", "boxit-london", "storage/booking.created", at=f"{day}T09:00:00+00:00"))
    s.add(MailLine("dead-lettered", reason="not_avro"))
    table = s.table().splitlines()
    assert table[0].split()[:4] == ["tenant", "trigger", "fired", "duplicate"]
    assert table[-1].split()[:3] == ["total", "2", "1"]
    assert s.count("dead-lettered") == 1
    assert s.days().splitlines()[1:] == ["2026-12-04  storage/booking.created      1",
                                         "2026-12-05  storage/booking.created      1"]


def test_spans_and_until() -> None:
    assert parse_span("15m") == dt.timedelta(minutes=15)
    assert parse_span("1d") == dt.timedelta(days=1)
    with pytest.raises(ConfigurationError):
        parse_span("soon")
    assert parse_until("+30d", T0) == T0 + dt.timedelta(days=30)
    assert parse_until("2027-01-01", T0) == dt.datetime(2027, 1, 1, tzinfo=dt.timezone.utc)


def test_progress_is_silent_off_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(10, out)
    for _ in range(10):
        progress()
    progress.close()
    assert progress.done == 10 and out.getvalue() == ""


def test_progress_on_a_terminal_says_read_of_total_rate_and_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [100.0]
    monkeypatch.setattr("streams.replay.cli.time.monotonic", lambda: now[0])
    out = Terminal()
    progress = Progress(1000, out)
    progress()
    assert out.getvalue() == ""  # not before half a second
    now[0] += 2.0
    progress.update(400)  # several processes: their summed count
    assert out.getvalue() == "\rread 400 of 1,000 records, 200/s, 3 s left   "
    progress.close()
    assert out.getvalue().endswith("\n")


def _m(mid: str, text: str = "Hello", subject: str = "Booked") -> Mail:
    return Mail(mid, "boxit-london", "storage/booking.created", subject, text, f"<p>{text}</p>")


def test_shadow_reports_new_gone_changed_and_failed_by_message_id() -> None:
    from streams.replay.shadow import Deployed

    replayed = {"same": _m("same"), "new": _m("new"), "changed": _m("changed", "Hello\nSee you soon")}
    deployed = Deployed(
        mails={"same": _m("same"), "gone": _m("gone"), "changed": _m("changed", "Hello\nSee you")},
        failed={"same": "rejected_by_provider"},
    )
    kinds = [(d.kind, d.message_id) for d in compare(replayed, deployed)]
    assert kinds == [(NEW, "new"), (GONE, "gone"), (CHANGED, "changed"), (FAILED, "same")]
    changed = next(d for d in compare(replayed, deployed) if d.kind == CHANGED)
    assert "-See you" in changed.diff and "+See you soon" in changed.diff
    assert json.loads(changed.json())["shadow"] == "changed"
    assert compare({"same": _m("same")}, Deployed(mails={"same": _m("same")})) == []


def test_the_diff_shows_a_changed_subject() -> None:
    diff = text_diff(_m("x", subject="Booked"), _m("x", subject="Your booking"))
    assert "-Subject: Booked" in diff and "+Subject: Your booking" in diff


def test_deployed_mails_are_those_of_the_replayed_records() -> None:
    def record(mid: str, topic: str, at: dt.datetime) -> dict[str, object]:
        return {"message_id": mid, "tenant_id": "boxit-london", "pack": "storage", "trigger": "booking.created",
                "subject": "s", "text": "t", "html": "h", "source_topic": topic, "source_timestamp": at}

    outbound = [
        record("in", "t.storage.bookings", T0),
        record("before", "t.storage.bookings", T0 - dt.timedelta(seconds=1)),
        record("other-topic", "t.firings", T0),
    ]
    statuses = [{"message_id": "in", "status": "FAILED", "reason": "x"}, {"message_id": "in", "status": "SENT"}]
    deployed = collect_deployed(outbound, statuses, topics={"t.storage.bookings"}, first=T0, last=T0 + dt.timedelta(hours=1))
    assert set(deployed.mails) == {"in"}
    assert deployed.failed == {}  # the latest status counts


def test_a_simulation_reads_partitions_merged_by_time() -> None:
    from streams.replay.kafka import in_time_order

    def rec(p: int, offset: int, minute: int) -> ReplayRecord:
        return ReplayRecord("t", p, offset, None, None, (T0 + dt.timedelta(minutes=minute)).timestamp())

    a, b = ("t", 0), ("t", 1)
    # The broker serves partition 0's records (minutes 5, 9) before partition 1's (minutes 1, 7).
    events = [(a, rec(0, 0, 5)), (a, rec(0, 1, 9)), (a, None), (b, rec(1, 0, 1)), (b, rec(1, 1, 7)), (b, None)]
    order = [(r.partition, r.offset) for r in in_time_order(events, [a, b])]
    assert order == [(1, 0), (0, 0), (1, 1), (0, 1)]
    # Held records are bounded: past max_held the earliest held goes, whatever is still to come.
    assert len(list(in_time_order(events, [a, b], max_held=1))) == 4

"""The tenant checks are safe to run on anything: every failure is a problem line or a rejected record.

Issue 14: records whose check raised stopped the worker's tenant feed, the CLI printed tracebacks,
and the checker allocated what a template asked for at compile time.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.metrics import create
from streams.settings import REPO_ROOT, Settings
from streams.tenants import cli
from streams.tenants.feed import TenantFeed
from streams.tenants.records import apply_record
from streams.tenants.validate import pack_problems, validate_files
from tests.hostile import CHECK_KILLERS, UNCOMPILABLE, override, poisoned_records, tenant_data

CATALOG = Catalog.load()
TEMPLATES = REPO_ROOT / "templates"


def _check(tenant: Tenant) -> list[tuple[str, str]]:
    """What the worker checks (streams/app.py's ``servable``, less the unsubscribe secret)."""
    return list(pack_problems(tenant, CATALOG, TEMPLATES))


@pytest.mark.parametrize("name", sorted(poisoned_records()))
def test_a_poisoned_record_is_rejected_with_a_reason_and_the_previous_version_stays(name: str) -> None:
    data = tenant_data()
    directory = TenantDirectory()
    key = data["tenant_id"].encode()
    assert apply_record(directory, key, json.dumps(data).encode(), _check).outcome == "applied"
    before = directory.get(data["tenant_id"])
    tracemalloc.start()
    started = time.thread_time()
    update = apply_record(directory, key, poisoned_records(data)[name], _check)
    spent = time.thread_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert spent < 5 and peak < 64 * 1024 * 1024, (spent, peak)
    if name in CHECK_KILLERS and name not in UNCOMPILABLE:
        # Compiles without evaluating anything; its mails fail at render time, over budget.
        assert update.outcome == "applied", update
        return
    assert update.outcome == "rejected" and update.detail, update
    assert update.reason in {"invalid_tenant", "not_servable", "check_failed"}
    assert directory.get(data["tenant_id"]) is before
    changed = {**data, "brand": {**data["brand"], "name": "Boxit London II"}}
    assert apply_record(directory, key, json.dumps(changed).encode(), _check).outcome == "applied"


def test_the_feed_counts_a_rejection_by_reason_and_never_raises() -> None:
    metrics = create()
    feed = TenantFeed("127.0.0.1:1", "t", TenantDirectory(), check=_check, metrics=metrics)
    poisoned = {k: v for k, v in poisoned_records().items() if k not in CHECK_KILLERS or k in UNCOMPILABLE}
    for offset, value in enumerate(poisoned.values()):
        feed.apply(0, offset, b"boxit-london", value)
    feed.apply(0, 99, None, b"{}")
    assert len(feed.rejected) == len(poisoned) + 1
    counted = {
        s.labels["reason"]: s.value for m in metrics.registry.collect() if m.name == "tidings_tenant_records_rejected"
        for s in m.samples if s.name.endswith("_total")
    }
    assert sum(counted.values()) == len(poisoned) + 1 and "no_key" in counted


@pytest.mark.parametrize("name", UNCOMPILABLE)
def test_publish_prints_a_problem_line_for_a_template_whose_check_once_raised(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "boxit-london.yaml"
    path.write_text(yaml.safe_dump(override(tenant_data(), CHECK_KILLERS[name]), allow_unicode=True))
    assert cli.main(["publish", "--check", str(tmp_path)], settings=Settings()) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.startswith(f"{path}: templates.storage/booking.created/") for line in lines), lines


def test_a_file_that_kills_the_yaml_parser_is_one_problem_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000)
    _, problems = validate_files([path], CATALOG, TEMPLATES)
    assert [p.field for p in problems] == ["<file>"] or [p.field for p in problems] == ["<root>"]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"days": 10_000_000}, "days must be between 1 and 366"), ({"days": 0}, "days must be"), ({"hours": 100_000}, "must be"),
     ({"steps": [3, 10, 100_000]}, "each step must be between 1 and 366"), ({"steps": list(range(1, 30))}, "at most 12 steps")],
)
def test_trigger_parameters_are_bounded(tmp_path: Path, params: dict[str, object], message: str) -> None:
    data = tenant_data(REPO_ROOT / "deploy" / "tenants" / "lagerhaus-nord.yaml")
    key = "storage/invoice.after_due" if "steps" in params else "storage/booking.before_move_out"
    data = {**data, "templates": {}, "triggers": {**data["triggers"], key: {"enabled": True, "params": params}}}
    path = tmp_path / "lagerhaus-nord.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    _, problems = validate_files([path], CATALOG, TEMPLATES)
    assert any(message in p.message for p in problems), problems


@pytest.mark.parametrize(
    ("field", "value", "accepted"),
    [("from_address", "buchung@lagerhäuser.example", "buchung@xn--lagerhuser-v5a.example"),
     ("reply_to", "Service@Bücher.example", "Service@xn--bcher-kva.example"),
     ("from_address", "jürgen@example.org", None), ("reply_to", "jürgen@example.org", None)],
)
def test_a_sender_address_is_held_in_its_sendable_form_or_refused(field: str, value: str, accepted: str | None) -> None:
    data = tenant_data()
    data = {**data, "sender": {**data["sender"], field: value}}
    directory = TenantDirectory()
    update = apply_record(directory, data["tenant_id"].encode(), json.dumps(data).encode(), _check)
    if accepted is None:
        assert update.outcome == "rejected" and f"sender.{field}" in update.detail
    else:
        tenant = directory.get(data["tenant_id"])
        assert tenant is not None and getattr(tenant.sender, field) == accepted


def test_an_oversized_template_is_refused() -> None:
    data = override(tenant_data(), "x" * (64 * 1024 + 1))
    update = apply_record(TenantDirectory(), b"boxit-london", json.dumps(data).encode(), _check)
    assert update.outcome == "rejected" and "a template may have 65536" in update.detail

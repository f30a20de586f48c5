"""Tenant configuration as a topic, without a broker: the checks `tidings-tenants publish` runs
(precise `file: field: message` lines, nothing published on any problem), the records of the
tenants topic, and the live `TenantDirectory` the worker keeps from them."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from streams.domain.rules import Catalog
from streams.domain.tenants import Brand, Tenant, TenantDirectory
from streams.settings import REPO_ROOT, Settings
from streams.tenants import cli, feed
from streams.tenants.records import apply_record, encode
from streams.tenants.validate import pack_problems, validate_files

CATALOG = Catalog.load()
TEMPLATES = REPO_ROOT / "templates"
EXAMPLES = REPO_ROOT / "deploy" / "tenants"
# Settings that name no reachable broker: a test that reached Kafka would fail.
OFFLINE = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="unit.")

VALID = """\
tenant_id: acme
packs: [storage]
languages: [en, de]
default_language: en
time_zone: Europe/Berlin
default_send_time: "08:30"
brand: {name: Acme, primary_color: "#123456"}
sender: {from_address: mail@acme.example}
triggers:
  storage/booking.created: {enabled: true}
  storage/booking.cancelled: {enabled: true}
  storage/booking.before_move_out: {enabled: true, params: {days: 10}}
"""


def _write(folder: Path, text: str, name: str = "acme.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(*paths: Path) -> list[str]:
    return [str(p) for p in validate_files(list(paths), CATALOG, TEMPLATES)[1]]


def test_the_example_tenants_are_valid() -> None:
    tenants, problems = validate_files([EXAMPLES], CATALOG, TEMPLATES)
    assert problems == []
    assert len(tenants) == len(list(EXAMPLES.glob("*.yaml")))


def test_a_valid_tenant_keeps_its_send_time_and_trigger_params(tmp_path: Path) -> None:
    (tenant,), problems = validate_files([_write(tmp_path, VALID)], CATALOG, TEMPLATES)
    assert problems == []
    assert tenant.default_send_time.isoformat(timespec="minutes") == "08:30"
    assert tenant.triggers["storage/booking.before_move_out"].params == {"days": 10}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (('"#123456"', '"blue"'), "brand.primary_color", "'blue' is not a colour; write #rgb or #rrggbb"),
        (("Europe/Berlin", "Mars/Olympus"), "time_zone", "'Mars/Olympus' is not an IANA time zone such as Europe/Berlin"),
        (("mail@acme.example", "mail-at-acme"), "sender.from_address", "'mail-at-acme' is not an email address: "),
        (("[en, de]", "[en, english]"), "languages", "'english' is not a language tag like 'de' or 'de-AT'"),
        (("default_language: en", "default_language: fr"), "<root>", "default_language 'fr' is not in languages ['en', 'de']"),
        (('"08:30"', "10:30"), "default_send_time", "630 is not a time of day; write it quoted, as 'HH:MM' (e.g. '09:00')"),
        (("tenant_id: acme", "tenant_id: acme\ncolour: red"), "colour", "Extra inputs are not permitted"),
        (("packs: [storage]", "packs: [storage, bakery]"), "packs", "unknown pack 'bakery'"),
        (
            ("storage/booking.created:", "storage/booking.creatd:"),
            "triggers.storage/booking.creatd", "unknown trigger 'storage/booking.creatd'",
        ),
        (
            ("storage/booking.created:", "charging/auth.mfa_enabled:"),
            "triggers.charging/auth.mfa_enabled",
            "trigger 'charging/auth.mfa_enabled' belongs to pack 'charging', which is not in packs ['storage']",
        ),
    ],
)
def test_each_kind_of_invalid_tenant_is_one_precise_line(tmp_path: Path, change: tuple[str, str], field: str, message: str) -> None:
    path = _write(tmp_path, VALID.replace(*change))
    (problem,) = _problems(path)
    assert problem.startswith(f"{path}: {field}: {message}"), problem


def test_a_language_without_templates_for_a_trigger_that_is_on_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID.replace("[en, de]", "[en, de, fr]"))
    problems = _problems(path)
    # Every trigger the tenant has on lacks French; the storage pack ships English and German.
    assert sorted(problems) == sorted(
        f"{path}: languages: tenant acme offers 'fr' and has storage/{trigger} on, "
        f"but templates/storage/{trigger}/fr/ lacks subject.txt, body.html, body.txt"
        for trigger in ("booking.created", "booking.cancelled", "booking.before_move_out")
    )


def test_a_trigger_that_is_off_needs_no_templates_in_the_languages_offered(tmp_path: Path) -> None:
    text = VALID.replace("[en, de]", "[en, de, fr]").replace("{enabled: true}", "{enabled: false}")
    text = text.replace("{enabled: true, params", "{enabled: false, params")
    assert _problems(_write(tmp_path, text)) == []


def test_files_that_are_not_tenants_are_named(tmp_path: Path) -> None:
    broken = _write(tmp_path, "tenant_id: [unclosed", "broken.yaml")
    listing = _write(tmp_path, "- acme\n", "list.yaml")
    problems = _problems(broken, listing, tmp_path / "missing.yaml", tmp_path / "empty")
    assert problems[0].startswith(f"{tmp_path / 'missing.yaml'}: <file>: no such file or folder")
    assert problems[1].startswith(f"{tmp_path / 'empty'}: <file>: no such file or folder")
    assert problems[2].startswith(f"{broken}: <file>: not valid YAML: ")
    assert problems[3] == f"{listing}: <root>: a tenant is a mapping of fields, not list"


def test_a_tenant_defined_twice_is_refused(tmp_path: Path) -> None:
    first = _write(tmp_path, VALID, "a.yaml")
    second = _write(tmp_path, VALID, "b.yaml")
    assert _problems(tmp_path) == [f"{second}: tenant_id: tenant acme is also defined in {first}"]


def test_publish_prints_every_problem_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_publish(*args: object, **kwargs: object) -> None:
        raise AssertionError("published although a tenant was invalid")

    monkeypatch.setattr(feed, "publish", must_not_publish)
    monkeypatch.setattr(cli, "ensure_tenants_topic", must_not_publish)
    good = _write(tmp_path, VALID, "good.yaml")
    bad = _write(tmp_path, VALID.replace("acme", "bad-one").replace('"#123456"', '"#12345g"'), "bad.yaml")
    assert cli.main(["publish", str(good), str(bad), str(EXAMPLES)], settings=OFFLINE) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{bad}: brand.primary_color: '#12345g' is not a colour; write #rgb or #rrggbb"]
    assert "1 problem(s); nothing published" in err
    with pytest.raises(Exception, match="brand.primary_color"):
        cli.publish([good, bad], OFFLINE)


def test_publish_writes_every_tenant_when_all_are_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    written: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(feed, "publish", lambda bootstrap, topic, tenants: written.append((topic, [t.tenant_id for t in tenants])))
    monkeypatch.setattr(cli, "ensure_tenants_topic", lambda settings: False)
    assert cli.main(["publish", str(EXAMPLES), str(_write(tmp_path, VALID))], settings=OFFLINE) == 0
    ((topic, ids),) = written
    assert topic == "unit.tenants"
    assert sorted(ids) == sorted([p.stem for p in EXAMPLES.glob("*.yaml")] + ["acme"])
    assert capsys.readouterr().out.startswith(f"published {len(ids)} tenant(s) to unit.tenants")


def test_check_only_needs_no_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["publish", "--check", str(EXAMPLES)], settings=OFFLINE) == 0
    assert "tenant(s) valid" in capsys.readouterr().out


# --- records of the tenants topic -------------------------------------------------------------

def _tenant(tenants: TenantDirectory, tenant_id: str = "boxit-london", **brand: str) -> Tenant:
    base = tenants.get(tenant_id)
    assert base is not None
    return base.model_copy(update={"brand": base.brand.model_copy(update=brand)}) if brand else base


def test_a_tenant_record_round_trips(tenants: TenantDirectory) -> None:
    directory = TenantDirectory()
    for tenant in tenants:
        key, value = encode(tenant)
        assert apply_record(directory, key, value).outcome == "applied"
        assert directory.get(tenant.tenant_id) == tenant


def test_a_changed_tenant_replaces_the_old_one_and_a_tombstone_removes_it(tenants: TenantDirectory) -> None:
    directory = TenantDirectory({"boxit-london": _tenant(tenants)})
    renamed = _tenant(tenants, name="BoxIt Self Storage")
    assert apply_record(directory, *encode(renamed)).outcome == "applied"
    assert directory.get("boxit-london").brand.name == "BoxIt Self Storage"  # type: ignore[union-attr]
    assert apply_record(directory, b"boxit-london", None).outcome == "removed"
    assert directory.get("boxit-london") is None and len(directory) == 0


@pytest.mark.parametrize(
    ("key", "value", "detail"),
    [
        (b"boxit-london", b"not json at all", "<root>: Invalid JSON"),
        (b"boxit-london", b'{"tenant_id": "boxit-london"}', "packs: Field required"),
        (None, b"{}", "record without a key"),
        (b"\xff\xfe", b"{}", "the key is not UTF-8 text"),
    ],
)
def test_a_bad_record_is_rejected_and_the_previous_version_stays(
    tenants: TenantDirectory, key: bytes | None, value: bytes, detail: str
) -> None:
    before = _tenant(tenants)
    directory = TenantDirectory({"boxit-london": before})
    update = apply_record(directory, key, value)
    assert update.outcome == "rejected"
    assert detail in update.detail
    assert directory.get("boxit-london") is before


def test_a_record_whose_key_names_another_tenant_is_rejected(tenants: TenantDirectory) -> None:
    directory = TenantDirectory()
    _, value = encode(_tenant(tenants))
    update = apply_record(directory, b"lagerhaus-nord", value)
    assert (update.outcome, update.detail) == ("rejected", "tenant_id: 'boxit-london' does not match the record key 'lagerhaus-nord'")
    assert len(directory) == 0


def test_the_worker_applies_the_pack_checks_to_records(tenants: TenantDirectory) -> None:
    before = _tenant(tenants)
    directory = TenantDirectory({"boxit-london": before})
    french = before.model_copy(update={"languages": ("en", "fr")})
    update = apply_record(directory, *encode(french), check=lambda t: pack_problems(t, CATALOG, TEMPLATES))
    assert update.outcome == "rejected"
    assert "languages: tenant boxit-london offers 'fr' and has storage/booking.created on" in update.detail
    assert directory.get("boxit-london") is before


# --- the live directory ----------------------------------------------------------------------

def test_the_directory_can_be_updated_and_iterated_while_it_changes(tenants: TenantDirectory) -> None:
    directory = TenantDirectory()
    for tenant in tenants:
        directory.put(tenant)
    assert len(directory) == len(tenants)
    seen = []
    for tenant in directory:  # a snapshot: changing the directory does not break the loop
        seen.append(tenant.tenant_id)
        directory.remove(tenant.tenant_id)
    assert sorted(seen) == sorted(t.tenant_id for t in tenants)
    assert len(directory) == 0
    assert directory.remove("boxit-london") is False


def test_readers_see_whole_tenants_while_a_writer_replaces_them(tenants: TenantDirectory) -> None:
    versions = [
        _tenant(tenants).model_copy(update={"brand": Brand(name=f"v{n}", footer=f"v{n}")}) for n in range(2)
    ]
    directory = TenantDirectory({"boxit-london": versions[0]})
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            directory.put(versions[n % 2])

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20_000):
            tenant = directory.get("boxit-london")
            assert tenant is not None and tenant.brand.name == tenant.brand.footer
    finally:
        stop.set()
        writer.join()

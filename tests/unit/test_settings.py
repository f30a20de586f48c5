from __future__ import annotations

import pydantic
import pytest

from streams.settings import REPO_ROOT, Settings


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    monkeypatch.setenv("TIDINGS_PARTITIONS", "12")
    settings = Settings()
    assert settings.partitions == 12
    assert settings.broker_url == "kafka://k1:9092;kafka://k2:9092"


def test_settings_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        Settings().partitions = 3  # type: ignore[misc]


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_PROCESSING_GUARANTEE", "maybe_once")
    with pytest.raises(pydantic.ValidationError, match="processing_guarantee"):
        Settings()


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_AWS_SECRET_ACCESS_KEY", "hunter2")
    assert "hunter2" not in repr(Settings())


@pytest.mark.parametrize(("quota", "expected"), [(14.0, 16), (200.0, 20), (500.0, 50), (1000.0, 100), (501.0, 51)])
def test_requests_in_flight_follow_the_quota_unless_set(quota: float, expected: int) -> None:
    assert Settings(ses_max_send_rate=quota).sender_in_flight == expected
    assert Settings(ses_max_send_rate=quota, sender_concurrency=8).sender_in_flight == 8


def test_a_concurrency_below_one_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SENDER_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="sender_concurrency"):
        Settings()


def test_an_unknown_role_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_ROLE", "stateles")
    with pytest.raises(pydantic.ValidationError, match="role"):
        Settings()


@pytest.mark.parametrize(("role", "group"), [("all", "acme"), ("stateful", "acme"), ("stateless", "acme-stateless")])
def test_the_stateless_role_is_a_consumer_group_of_its_own(role: str, group: str) -> None:
    from streams.runtime.groups import group_settings

    settings = Settings(app_id="acme", role=role)
    assert group_settings(settings).app_id == group
    assert group_settings(settings).role == role and settings.app_id == "acme"


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Configuration\n")
    table = readme[start:readme.index("\n## ", start + 1)]
    rows = [line for line in table.splitlines() if line.startswith("| `TIDINGS_")]
    missing = [name for name in Settings.model_fields if not any(f"`TIDINGS_{name.upper()}`" in row for row in rows)]
    assert not missing, f"settings missing from the README's Configuration table: {missing}"

from __future__ import annotations

import pydantic
import pytest

from streams.settings import Settings


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

"""The local broker's log level (``deploy/local/kafka_broker.py``): from the environment, checked."""

from __future__ import annotations

import pytest

from deploy.local import kafka_broker


def test_the_broker_logs_warnings_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kafka_broker.LOG_LEVEL_ENV, raising=False)
    assert kafka_broker.log_level() == "WARN"
    monkeypatch.setenv(kafka_broker.LOG_LEVEL_ENV, " info ")
    assert kafka_broker.log_level() == "INFO"
    text = kafka_broker.LOG4J2_PROPERTIES.format(log_file="/x/server.log", level=kafka_broker.log_level())
    assert "logger.kafka.level=INFO" in text and "logger.apache.level=INFO" in text


def test_an_unknown_level_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kafka_broker.LOG_LEVEL_ENV, "verbose\nlogger.x=1")
    with pytest.raises(kafka_broker.BrokerError, match="use one of TRACE, DEBUG, INFO, WARN, ERROR"):
        kafka_broker.log_level()

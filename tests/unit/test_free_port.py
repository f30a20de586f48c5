"""``free_port``: listening ports for the local components, outside the kernel's ephemeral range."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.local import support
from deploy.local.support import free_port


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_the_port_is_below_the_ephemeral_range_and_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768\t60999\n")
    monkeypatch.setattr(support, "EPHEMERAL_RANGE_FILE", ranges)
    ports = {free_port() for _ in range(20)}
    assert all(support.LISTEN_PORTS_FROM <= p < 32768 for p in ports), ports
    for port in ports:
        _bind(port)  # nothing listens there


def test_a_port_in_use_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("32768 60999")
    monkeypatch.setattr(support, "EPHEMERAL_RANGE_FILE", ranges)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks: Iterator[int] = iter([busy, busy, 23456])
        monkeypatch.setattr(support._random, "randrange", lambda lo, hi: next(picks))
        assert free_port() == 23456


@pytest.mark.parametrize("content", [None, "", "garbage", "1024 2048"])
def test_without_a_usable_range_the_kernel_picks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None) -> None:
    ranges = tmp_path / "ip_local_port_range"
    if content is not None:
        ranges.write_text(content)  # "1024 2048": no room below the range
    monkeypatch.setattr(support, "EPHEMERAL_RANGE_FILE", ranges)
    port = free_port()
    assert 0 < port < 65536
    _bind(port)

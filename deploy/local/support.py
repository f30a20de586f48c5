"""Small helpers shared by the local components: free ports, readiness waits, stopping processes."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# Where Linux takes the local ports of outgoing connections (net.ipv4.ip_local_port_range).
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LISTEN_PORTS_FROM = 10_000  # the listening ports are chosen from here up to the ephemeral range
PORT_ATTEMPTS = 50
_random = random.SystemRandom()  # not the seedable module state: two sessions seeded alike would pick alike


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the range the kernel gives outgoing connections.

    A port the kernel picks for ``bind(0)`` comes from that range, so any outgoing connection made
    before the service binds it can take it (the workers, the broker and the test's clients open
    hundreds: a benchmark's worker once failed on "address already in use"), and a worker keeps
    its port across restarts. Below the range only another listener can collide: a start that loses
    that race fails loudly on "address in use".
    """
    low = _ephemeral_low()
    if low is not None and low - LISTEN_PORTS_FROM > PORT_ATTEMPTS:
        for _ in range(PORT_ATTEMPTS):
            port = _random.randrange(LISTEN_PORTS_FROM, low)
            if _bindable(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int | None:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # not Linux, or no /proc: the kernel's pick


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str) -> None:
    """Poll ``check`` until it returns True; raise TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f}s")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def port_open(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code (None if never started)."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode

"""The preview gallery opens in a real browser: headless Chromium screenshots the index and some mails.

Needs Debian's ``chromium`` package (``apt-get install chromium``; ``.ci/run`` installs it). A
missing browser fails the test under ``CI=true``; elsewhere it is skipped, saying why
(``make install`` installs the package when it can). The screenshots stay in the test's tmp folder; look at
them after ``pytest --basetemp=.tidings/pytest`` when changing the layouts.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

from streams.tools.preview import build_gallery
from tests.tools import debian_tool

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_SECONDS = 90  # a cold headless start on a loaded 2-core CI machine takes a few seconds
WIDTH, HEIGHT = 1200, 1600
# Mails without a remote logo, so the browser never needs the network; three packs, three languages.
MAILS = [
    "mails/lagerhaus-nord/storage.booking.created.de.html",
    "mails/device-tracker-plus/tracker.purchase.completed.fr.html",
    "mails/beraterfinder/advisors.appointment.booked.advisor.en.html",
]


def _chromium() -> str:
    return str(CHROMIUM) if CHROMIUM.is_file() else debian_tool("chromium", "chromium")


def _screenshot(browser: str, page: Path, png: Path, profile: Path) -> None:
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=SCREENSHOT_SECONDS, check=False)
    assert png.is_file(), f"chromium wrote no screenshot of {page} (exit {done.returncode}):\n{done.stderr[-2000:]}"


def _png_pixels(png: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (still filtered) scanlines of a PNG."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_gallery_index_and_mails_render_in_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    index, entries = build_gallery(tmp_path / "gallery")
    assert entries and not [e for e in entries if e.error], [e.error for e in entries if e.error]
    pages = [index, *(index.parent / m for m in MAILS)]
    shots = []
    for number, page in enumerate(pages):
        assert page.is_file(), f"the gallery has no {page.relative_to(index.parent)}"
        png = tmp_path / f"shot-{number}-{page.stem}.png"
        _screenshot(browser, page, png, tmp_path / "profile")
        width, height, pixels = _png_pixels(png)
        assert (width, height) == (WIDTH, HEIGHT)
        assert png.stat().st_size > 10_000, f"{png} is suspiciously small: a blank page?"
        assert len(set(pixels)) > 32, f"{png} is (nearly) one colour: the page did not render"
        shots.append(png.read_bytes())
    assert len(set(shots)) == len(shots), "two different pages gave the same screenshot"

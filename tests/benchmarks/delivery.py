"""How many of the run's mails reached SES, cheaply.

The worker's own counter (``tidings_emails_sent_total`` on ``/metrics``) is polled while waiting:
it is one small HTTP page. The SES emulator's ``/moto-api/data.json`` is the ground truth but
lists every mail ever sent with its full MIME body and gets slow as it grows, so it is read once,
at the end, and only counted (no MIME parsing).
"""

from __future__ import annotations

import json
import urllib.request


def emails_sent(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return int(sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("tidings_emails_sent_total{")
    ))


def mails_in_emulator(endpoint: str, address_marker: str) -> int:
    """Mails in the emulator with a recipient address containing ``address_marker``."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=60) as response:
        data = json.load(response)
    raw = data.get("ses", {}).get("RawMessage", [])
    return sum(1 for m in raw if any(address_marker in d for d in m.get("destinations", [])))

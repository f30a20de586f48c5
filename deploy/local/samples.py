"""Sample domain events, as a producing service would publish them.

Used by the demo, the integration tests and the benchmarks, so all three speak of the same
bookings. The values are plausible, not random: a reader of a rendered mail should recognise it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from streams.domain.samples import new_envelope

BOOKING_CREATED = "tidings.storage.BookingCreated"

SITES = {
    "lagerhaus-nord": ("Hamburg Hafencity", "Speicherstraße 12, 20457 Hamburg"),
    "boxit-london": ("BoxIt Islington", "4 Canal Walk, London N1 5SZ"),
}
NAMES = ("Jana Müller", "Tom Becker", "Aisha Khan", "Lukas Schmidt", "Emily Clarke", "Mehmet Yılmaz")


def booking_created(
    tenant_id: str,
    n: int,
    *,
    email: str | None = None,
    locale: str | None = None,
    booking_id: str | None = None,
    occurred_at: dt.datetime | None = None,
) -> dict[str, Any]:
    site, address = SITES.get(tenant_id, ("Central Storage", "1 Main Street"))
    # A month after the event, whenever it runs: a fixed date would pass, and the timed
    # triggers of every booking (before and at the move-in) would then fire at once.
    when = occurred_at if occurred_at is not None else dt.datetime.now(dt.timezone.utc)
    move_in = when.date() + dt.timedelta(days=30 + n % 28)
    return {
        "envelope": new_envelope(tenant_id, now=occurred_at, producer="storage-manager"),
        "booking_id": booking_id or f"BK-{n:06d}",
        "customer": {
            "id": f"CU-{n:06d}",
            "email": email or f"customer{n}@example.org",
            "name": NAMES[n % len(NAMES)],
            "locale": locale,
            "time_zone": None,
        },
        "unit_name": f"{chr(65 + n % 5)}-{100 + n % 50}, {4 + n % 9} m²",
        "site_name": site,
        "site_address": address,
        "move_in_date": move_in,
        "move_out_date": None if n % 3 else move_in + dt.timedelta(days=180),
        "monthly_price": {"amount_minor": 4900 + 1000 * (n % 7), "currency": "GBP" if tenant_id == "boxit-london" else "EUR"},
    }


def tiny_pdf(text: str) -> bytes:
    """A minimal, valid one-page PDF showing ``text`` (ASCII), standing in for an invoice."""
    safe = "".join(c for c in text if 32 <= ord(c) < 127 and c not in "()\\")
    stream = f"BT /F1 12 Tf 72 720 Td ({safe}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)

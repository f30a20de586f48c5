"""Rendering speed: renders per second on one core, Tidings' renderer against bare Jinja2.

One real branded mail (storage/booking.created in German: layout inheritance, Babel dates and
money, CSS inlining, subject, HTML and text parts) rendered from the pack's sample event:

- Tidings, warm: one ``Renderer`` reused, compiled templates cached (the worker's steady state),
  the same event every time (so the date and money filters' kept results always serve);
- Tidings, warm, a different booking each mail: the same, cycling through ``VARIED`` bookings that
  differ in move-in date, price, booking id and address, more than the filters keep, so Babel
  formats each value once per mail (its HTML part) and the text part reuses it;
- Tidings, cold: a new ``Renderer`` per mail, so every template is loaded and compiled again
  (a worker's first mails, or a cache too small for the template set);
- bare Jinja2, warm: a plain ``Environment`` (no sandbox, no StrictUndefined, no inlining, no
  validation) rendering the same three files with the same context and the same ``date`` and
  ``money`` filters (so it profits from their kept results too), the floor a template engine
  alone can reach.

Single-threaded on purpose: the figure is per core. Measured in thread CPU time, in ``ROUNDS``
rounds that take each case in turn, the median round reported: on a machine shared with other
work, wall time measures the neighbours and a load spike would hit one case only (on an idle
machine the two agree). Printed, and written to ``.tidings/bench/render.json``; nothing about
speed is asserted.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import statistics
import time
from collections.abc import Callable

from jinja2 import Environment, FileSystemLoader, select_autoescape

from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.samples import sample_event
from streams.domain.tenants import TenantDirectory
from streams.rendering.environment import build_environment
from streams.rendering.render import PARTS, Renderer, Source
from streams.settings import REPO_ROOT
from tests.benchmarks.report import machine

TEMPLATES = REPO_ROOT / "templates"
EVENT = "tidings.storage.BookingCreated"
TENANT = "lagerhaus-nord"
SECONDS_PER_CASE = 3.0  # of CPU, in ROUNDS rounds
ROUNDS = 6
# Bookings cycled through in the varied case: each adds three kept filter results (two dates are
# one, plus the price), so 5,000 of them outgrow the filters' 4,096 entries and every one misses.
VARIED = 5000


def _cpu_ms(fn: Callable[[], object], seconds: float) -> float:
    """Thread CPU milliseconds per call of ``fn``, over ``seconds`` of CPU."""
    n, start = 0, time.thread_time()
    while (spent := time.thread_time() - start) < seconds:
        fn()
        n += 1
    return 1000 * spent / n


def test_render_throughput() -> None:
    catalog = Catalog.load()
    tenant = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get(TENANT)
    assert tenant is not None
    event = sample_event(catalog.samples, EVENT, TENANT)
    (firing,) = event_firings(EVENT, event, catalog, tenant)
    source = Source("bench", "e", event["envelope"]["occurred_at"])
    now = event["envelope"]["occurred_at"]

    warm = Renderer(TEMPLATES)
    mail = warm.render(firing, tenant, event, source, now).record
    assert mail["locale"] == "de" and mail["subject"]

    varied = []
    for n in range(VARIED):
        booking = {**event, "booking_id": f"BK-{200000 + n}", "move_in_date": event["move_in_date"] + dt.timedelta(days=n),
                   "monthly_price": {"amount_minor": 5000 + n, "currency": "EUR"},
                   "customer": {**event["customer"], "email": f"kunde.{n}@example.org"}}
        (booking_firing,) = event_firings(EVENT, booking, catalog, tenant)
        varied.append((booking_firing, booking))
    turn = itertools.cycle(varied)

    def render_varied() -> object:
        booking_firing, booking = next(turn)
        return warm.render(booking_firing, tenant, booking, source, now)

    bare = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    bare.filters.update(build_environment(TEMPLATES).filters)  # the same Babel filters
    context = {**event, "recipient": event["customer"], "brand": tenant.brand.model_dump(), "locale": "de",
               "format_locale": "de", "time_zone": tenant.time_zone}
    bare_templates = [bare.get_template(f"storage/booking.created/de/{part}") for part in PARTS]
    bare_html = bare_templates[1].render(context)
    assert event["booking_id"] in bare_html

    cases: dict[str, Callable[[], object]] = {
        "tidings_warm": lambda: warm.render(firing, tenant, event, source, now),
        "tidings_warm_varied": render_varied,
        "tidings_cold": lambda: Renderer(TEMPLATES).render(firing, tenant, event, source, now),
        "bare_jinja2_warm": lambda: [t.render(context) for t in bare_templates],
    }
    for fn in cases.values():
        fn()  # not timed: imports and first-use costs are not what this measures
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            rounds[name].append(_cpu_ms(fn, SECONDS_PER_CASE / ROUNDS))
    ms = {name: statistics.median(values) for name, values in rounds.items()}
    figures = {name: 1000 / value for name, value in ms.items()}
    report = {
        "mail": f"{EVENT} -> storage/booking.created (de), {len(mail['html'])} bytes of HTML",
        "renders_per_second_one_core": {k: round(v, 1) for k, v in figures.items()},
        "ms_per_mail_cpu": {k: round(v, 4) for k, v in ms.items()},
        "ms_per_mail_cpu_rounds": {k: [round(x, 4) for x in v] for k, v in rounds.items()},
        "ratio_tidings_warm_to_bare": round(figures["tidings_warm"] / figures["bare_jinja2_warm"], 3),
        "ratio_tidings_warm_varied_to_bare": round(figures["tidings_warm_varied"] / figures["bare_jinja2_warm"], 3),
        "machine": machine(),
    }
    out = REPO_ROOT / ".tidings" / "bench" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nRender benchmark: {report['mail']}, one core, {SECONDS_PER_CASE:.0f} s of CPU per case, median of {ROUNDS} rounds")
    for name, rate in figures.items():
        print(f"  {name:<20} {rate:9.1f} renders/s   {1000 / rate:7.3f} ms/render")
    print(f"  ratio Tidings warm / bare Jinja2 warm: {report['ratio_tidings_warm_to_bare']}")
    print(f"  ratio Tidings warm, varied / bare Jinja2 warm: {report['ratio_tidings_warm_varied_to_bare']}")
    print(f"  figures also in {out.relative_to(REPO_ROOT)}")

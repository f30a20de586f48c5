"""What a hostile tenant can cost a worker per event, and what another tenant's mail waits behind it.

Every hostile template of ``tests/unit/test_budgets.py`` (the issue's and the generated set), plus
templates chosen to make the single largest step the budget allows (a filter over a value of
``max_value_chars``), is rendered as a tenant override through the worker's own ``Renderer``
(sandbox, budgets, CSS inlining) for one booking.created event, with the default budgets:

- CPU seconds per hostile event (thread CPU time) and wall seconds: worst and median;
- peak memory a render allocates (tracemalloc, measured in a second pass, as it slows rendering);
- added latency of another tenant's mail: rendering runs on the worker's event loop, so a mail
  queued behind a hostile event waits that event's wall time; measured as the victim's render
  finishing time minus its own render time, with one hostile event ahead of it each time.

Printed and written to ``.tidings/bench/hostile.json``; the README quotes the figures. Nothing is
asserted beyond every hostile mail failing (the slow single steps are legal mails). CPU figures are
thread CPU time and hold on a loaded machine; wall figures grow with the machine's load.
"""

from __future__ import annotations

import json
import statistics
import time
import tracemalloc

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.tenants import Tenant, TenantDirectory
from streams.errors import RenderFailed
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from tests.benchmarks.report import machine
from tests.hostile import CSS_BOMB, tenant_data
from tests.unit.test_budgets import GENERATED, KNOWN

# The most a single budgeted step costs: a filter or method over the largest value allowed.
SLOW_STEPS = [
    "{{ ('a ' * 120000)|title }}",
    "{{ ('<a>' * 80000)|striptags }}",
    "{{ ('a b ' * 20000)|wordwrap(1) }}",
    "{{ ('www.a.com ' * 3000)|urlize }}",
    "{% set s = 'x' * 250000 %}{% for i in range(100000) %}{{ s.count('y') }}{% endfor %}",
    "{% for i in range(100000) %}{{ ('a ' * 100000)|title|length }}{% endfor %}",
    CSS_BOMB,
]


def _firing(tenant: Tenant, event: dict):  # type: ignore[no-untyped-def]
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    return firing


def test_the_worst_a_hostile_tenant_costs_per_event() -> None:
    base = tenant_data()
    renderer = Renderer(REPO_ROOT / "templates")
    victim = TenantDirectory.load(REPO_ROOT / "deploy" / "tenants").get("lagerhaus-nord")
    assert victim is not None
    victim_event = booking_created("lagerhaus-nord", 1)
    victim_firing = _firing(victim, victim_event)
    source = Source("bench", "e", victim_event["envelope"]["occurred_at"])
    now = victim_event["envelope"]["occurred_at"]
    renderer.render(victim_firing, victim, victim_event, source, now)  # warm: compiled, cached

    cases = []
    for n, template in enumerate(KNOWN + GENERATED + SLOW_STEPS):
        data = {**base, "tenant_id": f"hostile-{n:03d}", "templates": {
            "storage/booking.created/en/subject.txt": "Booking {{ booking_id }}",
            "storage/booking.created/en/body.html": template,
            "storage/booking.created/en/body.txt": "{{ booking_id }}",
        }}
        tenant = Tenant.model_validate(data)
        event = booking_created(tenant.tenant_id, n)
        cases.append((template, tenant, event, _firing(tenant, event)))

    rows = []
    for template, tenant, event, firing in cases:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            renderer.render(firing, tenant, event, source, now)
            outcome = "rendered"
        except RenderFailed as e:
            outcome = str(e).split("render budget '")[1].split("'")[0] if "render budget '" in str(e) else str(e)[:60]
        cpu, hostile_wall = time.thread_time() - cpu, time.perf_counter() - wall
        # The other tenant's mail, queued behind it on the event loop.
        started = time.perf_counter()
        renderer.render(victim_firing, victim, victim_event, source, now)
        victim_alone = time.perf_counter() - started
        rows.append({"template": template[:70], "outcome": outcome, "cpu_s": cpu, "wall_s": hostile_wall,
                     "victim_waits_s": hostile_wall, "victim_render_s": victim_alone})

    for row, (_, tenant, event, firing) in zip(rows, cases, strict=True):
        tracemalloc.start()
        try:
            renderer.render(firing, tenant, event, source, now)
        except RenderFailed:
            pass
        row["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

    worst_cpu = max(rows, key=lambda r: r["cpu_s"])
    worst_mem = max(rows, key=lambda r: r["peak_mib"])
    report = {
        "hostile_templates": len(rows),
        "stopped_by_budget": {o: sum(1 for r in rows if r["outcome"] == o) for o in sorted({r["outcome"] for r in rows})},
        "cpu_seconds_per_event": {"worst": round(worst_cpu["cpu_s"], 3), "median": round(statistics.median(r["cpu_s"] for r in rows), 4),
                                  "worst_template": worst_cpu["template"]},
        "wall_seconds_per_event": {"worst": round(max(r["wall_s"] for r in rows), 3)},
        "peak_memory_mib_per_event": {"worst": round(worst_mem["peak_mib"], 1), "median": round(statistics.median(r["peak_mib"] for r in rows), 2),
                                      "worst_template": worst_mem["template"]},
        "victim_added_latency_seconds": {"worst": round(max(r["victim_waits_s"] for r in rows), 3),
                                         "median": round(statistics.median(r["victim_waits_s"] for r in rows), 4)},
        "victim_render_seconds_median": round(statistics.median(r["victim_render_s"] for r in rows), 4),
        "machine": machine(),
    }
    out = REPO_ROOT / ".tidings" / "bench" / "hostile.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "cases": rows}, indent=2))
    print("\nHostile tenant benchmark (default budgets):")
    print(json.dumps(report, indent=2))
    # The slow single steps are legal mails (within every budget); every hostile template fails.
    hostile = len(KNOWN) + len(GENERATED)
    assert not [r["template"] for r in rows[:hostile] if r["outcome"] == "rendered"]

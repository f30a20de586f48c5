"""Render budgets hold for hostile templates, including ones generated from building blocks.

Each hostile template must fail with ``BudgetExceeded`` (naming the budget) or, for nesting the
parser cannot take, a plain error, within a bounded CPU time and memory; none may succeed by
allocating or looping past its budget. Compiling any of them evaluates nothing.
"""

from __future__ import annotations

import itertools
import time
import tracemalloc
from pathlib import Path

import pytest
from jinja2 import Environment, StrictUndefined, TemplateError
from markupsafe import Markup

from deploy.local.samples import BOOKING_CREATED, booking_created
from streams.domain.evaluate import event_firings
from streams.domain.rules import Catalog
from streams.domain.tenants import TenantDirectory
from streams.errors import RenderFailed
from streams.rendering.budget import BudgetExceeded, RenderBudget, metered
from streams.rendering.environment import build_environment
from streams.rendering.render import Renderer, Source
from streams.settings import REPO_ROOT
from tests.hostile import CSS_BOMB
from tests.unit.conftest import NOW

BUDGET = RenderBudget()
# A hostile render may overshoot its CPU budget by at most one bounded step (the largest single
# operation on a value of max_value_chars, measured at ~0.1 s) ; the rest is slack for a loaded CI.
CPU_CEILING = BUDGET.max_cpu_seconds + 0.5
MEMORY_CEILING = 64 * 1024 * 1024

# The templates of issue 14, then whatever an attacker would try next.
KNOWN = [
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 10 ** 5000 }}",
    "{{ 10 ** (10 ** 8) }}",
    "{{ 2 ** (2 ** (2 ** 5)) }}",
    "{{ ('x' * 3000000000)|length }}",
    "{{ 'x' * 10**9 }}",
    "{{ [0] * 10**9 }}",
    "{{ '%s' % ('x' * 200000) * 100 }}",
    "{{ '%1000000000s' % 'x' }}",
    "{{ '%*s' % (1000000000, 'x') }}",
    "{{ '{:>1000000000}'.format(1) }}",
    "{{ '{:.1000000000f}'.format(1.5) }}",
    "{{ '{0}{0}{0}{0}{0}{0}{0}{0}{0}{0}'.format('y' * 200000) }}",
    "{{ range(100000)|join(',') }}",
    "{{ range(100000)|map('center', 200000)|join }}",
    "{{ ('x' * 200000)|wordwrap(1) }}",
    "{{ 'x'|center(1000000000) }}",
    "{{ ('a\\n' * 100000)|indent(10000) }}",
    "{{ ('x' * 1000)|replace('', 'y' * 1000) }}",
    "{{ 'ab'.replace('', 'x' * 1000000) }}",
    "{{ 'x'.zfill(1000000000) }}",
    "{{ 'x'.ljust(1000000000) }}",
    "{{ (1).to_bytes(1000000000, 'big') }}",
    "{{ [1]|batch(1000000000, 'x')|list }}",
    "{{ range(1000)|list|tojson(indent=100000) }}",
    "{{ ('www.example.com ' * 10000)|urlize(target='x' * 10000) }}",
    "{{ (range(10000)|map('string')|list)|sum(start=[]) }}",
    "{{ 'x'.expandtabs(1000000000) }}",
    "{{ 'abc'.translate({97: 'x' * 1000000}) }}",
    "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{{ caller() }}{% call f(n) %}x{% endcall %}{% endmacro %}{% call f(1) %}y{% endcall %}",
    "{% for x in range(10) recursive %}{{ loop(range(100000)) }}{% endfor %}",
    "{% for x in [1] recursive %}{% for y in range(100000) if false %}{% endfor %}{{ loop([1]) }}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}",
    "{% set ns = namespace(n=2) %}{% for i in range(100) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "{% set l = [('x' * 200000)] %}{{ (l * 100000)|join }}",
    "{% set l = [[('x' * 1000)] * 200] %}{{ l * 1000 }}",
    "{% for i in range(100000) %}" + "x" * 1000 + "{% endfor %}",
    "{% for i in range(100000) %}{{ 'x' * 200000 }}{% endfor %}",
    "{% set s = 'x' * 250000 %}{% for i in range(100000) %}{{ s.count('y') }}{% endfor %}",
    "{% for i in range(100000) if false %}{% endfor %}",
    "{% set x %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}{{ x|length }}",
    "{% filter upper %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endfilter %}",
    "{{ 10 * 10 * 10 * 10 * 10 * 10 * 10 * 10 * 10 ** 4000 }}",
    "{{ ('%s' * 100000) % ((range(100000)|list)|batch(1)|first) }}",
]

# Too deep to parse or compile: rejected with an error, not a budget, and without a crash.
NESTED = [
    "{{ " + "(" * 2000 + "1" + ")" * 2000 + " }}",
    "{{ " + "[" * 2000 + "]" * 2000 + " }}",
    "".join(f"{{% for i{n} in range(2) %}}" for n in range(21)) + "x" + "{% endfor %}" * 21,
    "{% if true %}" * 300 + "x" + "{% endif %}" * 300,
]

# Building blocks the generated set combines: a way to repeat, and a body that spends.
REPEATS = [
    ("{% for i in range(100000) %}", "{% endfor %}"),
    ("{% for i in range(300) %}{% for j in range(300) %}", "{% endfor %}{% endfor %}"),
    ("{% for i in range(50) %}{% for j in range(50) %}{% for k in range(50) %}", "{% endfor %}{% endfor %}{% endfor %}"),
    ("{% for i in range(100000)|reverse %}", "{% endfor %}"),
    ("{% for i in (range(100000)|list) %}", "{% endfor %}"),
    ("{% for i in range(100000)|map('string') %}", "{% endfor %}"),
    ("{% macro m(d) %}{% if d < 1000 %}{{ m(d + 1) }}{% endif %}", "{% endmacro %}{{ m(0) }}"),
]
BODIES = [
    "",
    "{{ i }}",
    "{{ 'x' * 100000 }}",
    "{{ ('y' * 1000)|center(200000) }}",
    "{{ range(1000)|join(',') }}",
    "{{ ('a b c ' * 10000)|title }}",
    "{% set q = ('z' * 100000) ~ ('z' * 100000) %}",
    "{{ '%s%s' % ('x' * 100000, 'y' * 100000) }}",
    "<p>" + "static text " * 100 + "</p>",
]
GENERATED = [head + body + tail for (head, tail), body in itertools.product(REPEATS, BODIES)]


@pytest.fixture(scope="module")
def env():  # type: ignore[no-untyped-def]
    return build_environment(REPO_ROOT / "templates")


def _render(env, source: str) -> tuple[BaseException | None, float, int]:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    started = time.thread_time()
    error: BaseException | None = None
    try:
        with metered(BUDGET):
            env.from_string(source).render({})
    except Exception as e:  # noqa: BLE001 - what the renderer turns into RenderFailed
        error = e
    finally:
        spent = time.thread_time() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, spent, peak


@pytest.mark.parametrize("source", KNOWN + GENERATED, ids=lambda s: s[:60])
def test_a_hostile_template_stops_at_a_budget(env, source: str) -> None:  # type: ignore[no-untyped-def]
    error, spent, peak = _render(env, source)
    assert isinstance(error, BudgetExceeded), f"{source[:80]!r} ended with {error!r}"
    assert error.budget in {"iterations", "cpu_time", "output", "number_size", "depth"}
    assert spent < CPU_CEILING, f"{spent:.2f} s of CPU"
    assert peak < MEMORY_CEILING, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("source", ["{{ lipsum(1000000000) }}", "{{ lipsum(5, max=1000000000) }}", "{{ range(10**9)|list }}"])
def test_a_capped_global_stays_small(env, source: str) -> None:  # type: ignore[no-untyped-def]
    error, spent, peak = _render(env, source)
    assert spent < CPU_CEILING and peak < MEMORY_CEILING, repr(error)


@pytest.mark.parametrize("source", NESTED, ids=lambda s: s[:30])
def test_a_template_nested_too_deeply_fails_cleanly(env, source: str) -> None:  # type: ignore[no-untyped-def]
    error, spent, _ = _render(env, source)
    assert isinstance(error, (TemplateError, RecursionError, SyntaxError)), repr(error)
    assert spent < CPU_CEILING


@pytest.mark.parametrize(
    "source",
    ["{{ ('x' * 3000000000)|length }}", "{{ 10 ** 5000 }}", "{{ 10 ** 10 ** 8 }}", "{{ 'x'|center(3000000000) }}",
     "{{ '%3000000000s' % 'x' }}", "{% autoescape 'x'|center(3000000000) %}{% endautoescape %}"],
)
def test_compiling_evaluates_nothing(env, source: str) -> None:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    started = time.thread_time()
    env.compile(env.parse(source))
    spent = time.thread_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert spent < 0.5 and peak < 16 * 1024 * 1024


def test_budgets_are_per_mail_and_settable(env) -> None:  # type: ignore[no-untyped-def]
    loop = "{% for i in range(5000) %}.{% endfor %}"
    with metered(RenderBudget(max_iterations=4000)), pytest.raises(BudgetExceeded, match="iterations"):
        env.from_string(loop).render({})
    with metered(RenderBudget(max_iterations=6000)):
        assert len(env.from_string(loop).render({})) == 5000
    with metered(RenderBudget(max_cpu_seconds=0.01)), pytest.raises(BudgetExceeded, match="cpu_time"):
        env.from_string("{% for i in range(100000) %}{{ ('a b ' * 1000)|title }}{% endfor %}").render({})


class _Html:
    def __html__(self) -> str:
        return "<i>safe</i>"


# Every way an expression reaches the output: plain, in a set block and a macro (buffers), and
# under an autoescape decided at render time; each in text (no escaping) and in HTML.
OUTPUTS = (
    "{{ text }}|{{ markup }}|{{ number }}|{{ html }}|{% set s %}{{ text }}{% endset %}{{ s }}|"
    "{% macro m(v) %}[{{ v }}]{% endmacro %}{{ m(text) }}|{% autoescape flag %}{{ text }}{% endautoescape %}"
)


@pytest.mark.parametrize("flag", [True, False])
@pytest.mark.parametrize("source", [OUTPUTS, "{% autoescape true %}" + OUTPUTS + "{% endautoescape %}"], ids=["text", "html"])
def test_outputs_are_escaped_as_jinja_escapes_them(env, source: str, flag: bool) -> None:  # type: ignore[no-untyped-def]
    values = {"text": "<a href=\"x\">Tom & 'Jerry'</a>", "markup": Markup("<b>ok</b>"), "number": 5, "html": _Html(), "flag": flag}
    expected = Environment(undefined=StrictUndefined).from_string(source).render(values)
    escaping = flag or source.startswith("{% autoescape true %}")
    assert ("&lt;a href=&#34;x&#34;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;" in expected) == escaping
    with metered(BUDGET):
        assert env.from_string(source).render(values) == expected
    assert env.from_string(source).render(values) == expected  # outside a meter (tools), the same


@pytest.mark.parametrize("source", ["{{ v }}", "{% autoescape true %}{{ v }}{% endautoescape %}", "{% autoescape flag %}{{ v }}{% endautoescape %}"])
def test_every_output_is_measured_escaped_or_not(env, source: str) -> None:  # type: ignore[no-untyped-def]
    small = RenderBudget(max_subject_chars=100, max_html_chars=100, max_text_chars=100)
    with metered(small), pytest.raises(BudgetExceeded, match="output"):
        env.from_string(source).render(v="x" * 101, flag=True)
    with metered(small):
        assert env.from_string(source).render(v="x" * 100, flag=True) == "x" * 100


@pytest.mark.parametrize("body", ["{{ v }}", "{% autoescape true %}{{ v }}{% endautoescape %}", "x" * 100], ids=["text", "html", "static"])
def test_all_that_a_mail_writes_together_stops_at_the_output_budget(env, body: str) -> None:  # type: ignore[no-untyped-def]
    small = RenderBudget(max_iterations=10**6, max_subject_chars=100, max_html_chars=100, max_text_chars=100)
    assert small.max_produced_chars == 1600
    with metered(small):
        assert env.from_string("{% for i in range(15) %}" + body + "{% endfor %}").render(v="x" * 100) == "x" * 1500
    with metered(small), pytest.raises(BudgetExceeded, match="produced more than 1600 characters"):
        env.from_string("{% for i in range(17) %}" + body + "{% endfor %}").render(v="x" * 100)


def test_a_loaded_template_is_kept_for_its_loader(tmp_path: Path) -> None:
    from streams.rendering.environment import OverrideLoader

    env = build_environment(REPO_ROOT / "templates")
    name = "_layouts/base.txt"
    assert env.get_template(name) is env.get_template(name) is env.get_template(name, "storage/x/en/body.txt")
    (tmp_path / "_layouts").mkdir()
    (tmp_path / "_layouts" / "base.txt").write_text("another layout")
    env.loader = OverrideLoader(tmp_path)
    assert env.get_template(name).render() == "another layout"


def test_an_override_over_budget_fails_that_mail_naming_the_budget(tmp_path: Path, tenants: TenantDirectory) -> None:
    tenant = tenants.get("boxit-london")
    assert tenant is not None
    folder = tmp_path / "storage" / "booking.created" / "en"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hi")
    (folder / "body.html").write_text("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    (folder / "body.txt").write_text("x")
    event = booking_created("boxit-london", 1)
    (firing,) = event_firings(BOOKING_CREATED, event, Catalog.load(), tenant)
    with pytest.raises(RenderFailed, match=r"body.html: render budget 'iterations' exceeded") as caught:
        Renderer(tmp_path).render(firing, tenant, event, Source("t", "e", NOW), NOW)
    assert caught.value.reason == "render_failed"
    (folder / "body.html").write_text("<p>ok</p>")
    (folder / "subject.txt").write_text("{{ 'S' * 1001 }}")
    with pytest.raises(RenderFailed, match=r"subject.txt: render budget 'subject' exceeded"):
        Renderer(tmp_path).render(firing, tenant, event, Source("t", "e", NOW), NOW)
    (folder / "subject.txt").write_text("Hi")
    (folder / "body.html").write_text(CSS_BOMB)
    started = time.thread_time()
    with pytest.raises(RenderFailed, match=r"body.html: render budget 'css' exceeded"):
        Renderer(tmp_path).render(firing, tenant, event, Source("t", "e", NOW), NOW)
    assert time.thread_time() - started < CPU_CEILING
    small = RenderBudget(max_html_chars=100, max_text_chars=100)
    (folder / "subject.txt").write_text("Hi")
    (folder / "body.html").write_text("{{ 'h' * 150 }}")
    with pytest.raises(RenderFailed, match=r"render budget '(html|output)' exceeded"):
        Renderer(tmp_path, budget=small).render(firing, tenant, event, Source("t", "e", NOW), NOW)


def test_a_deployment_sets_the_budgets_with_settings() -> None:
    from streams.settings import Settings

    settings = Settings(render_max_iterations=500, render_max_cpu_seconds=1.5, render_max_html_chars=10_000)
    budget = RenderBudget.from_settings(settings)
    assert (budget.max_iterations, budget.max_cpu_seconds, budget.max_html_chars) == (500, 1.5, 10_000)
    assert RenderBudget.from_settings(Settings()) == RenderBudget()


class _Clocks:
    """A wall clock and a thread CPU clock the test moves; counts how often the CPU clock is read."""

    def __init__(self) -> None:
        self.wall = 1000.0
        self.cpu = 5.0
        self.cpu_reads = 0

    def perf_counter(self) -> float:
        return self.wall

    def thread_time(self) -> float:
        self.cpu_reads += 1
        return self.cpu


@pytest.mark.parametrize("wall_per_cpu", [1, 3, 250], ids=["idle", "loaded", "starved"])
def test_the_cpu_budget_fails_at_the_first_check_after_it_whatever_the_load(monkeypatch, wall_per_cpu: int) -> None:  # type: ignore[no-untyped-def]
    """The CPU clock is read only when the wall clock allows the deadline to have passed, yet no check
    after the deadline lets the render go on: the thread gets ``1 / wall_per_cpu`` of a core."""
    from streams.rendering import budget as module

    clocks = _Clocks()
    monkeypatch.setattr(module, "time", clocks)
    meter = module.Meter(RenderBudget(max_cpu_seconds=0.1))
    spent = 0.0
    tick = 0.0007  # CPU seconds between two checks
    while spent + tick <= 0.1:
        spent += tick
        clocks.cpu += tick
        clocks.wall += tick * wall_per_cpu
        meter.check_time()  # within the budget: never fails
    clocks.cpu += tick
    clocks.wall += tick * wall_per_cpu
    with pytest.raises(BudgetExceeded, match="cpu_time"):
        meter.check_time()
    if wall_per_cpu == 1:
        # On an idle core the wall clock runs with the CPU clock: read at the start, near the
        # deadline and at it, not at each of the ~140 checks.
        assert clocks.cpu_reads <= 4


def test_a_mail_that_ends_before_its_cpu_budget_could_be_spent_reads_the_cpu_clock_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from streams.rendering import budget as module

    # Built before the clocks are replaced: a full collection while it loads reads the CPU clock
    # too (_CollectorTime), which is not the render's reading.
    env = build_environment(REPO_ROOT / "templates")
    clocks = _Clocks()  # the wall clock stands still: far less than the CPU budget passes
    monkeypatch.setattr(module, "time", clocks)
    with metered(BUDGET) as meter:
        env.from_string("{% for i in range(50) %}{{ i }}{{ 'x' ~ i }}{% endfor %}").render({})
    assert meter.steps >= 50 and clocks.cpu_reads == 1


def test_a_full_collection_inside_a_render_is_not_counted_against_its_cpu_budget(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The collector's time is the process's, not the template's: a full collection of 0.15 s
    (what the unit tests' heap costs) inside a render with 0.1 s of budget fails nothing, while the
    same 0.15 s spent by the template fails it."""
    from streams.rendering import budget as module

    clocks = _Clocks()
    monkeypatch.setattr(module, "time", clocks)
    collector = module._CollectorTime()
    monkeypatch.setattr(module, "_collector", collector)
    meter = module.Meter(RenderBudget(max_cpu_seconds=0.1))
    collector("start", {"generation": 2})
    clocks.cpu += 0.15
    clocks.wall += 0.15
    collector("stop", {"generation": 2, "collected": 0})
    clocks.cpu += 0.01
    clocks.wall += 0.01
    meter.check_time()  # 0.01 s of the template's own
    clocks.cpu += 0.1
    clocks.wall += 0.1
    with pytest.raises(BudgetExceeded, match="cpu_time"):
        meter.check_time()


def test_only_full_collections_are_timed_and_each_thread_keeps_its_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import threading

    from streams.rendering import budget as module

    clocks = _Clocks()
    monkeypatch.setattr(module, "time", clocks)
    collector = module._CollectorTime()
    for generation in (0, 1):
        collector("start", {"generation": generation})
        clocks.cpu += 1.0
        collector("stop", {"generation": generation})
    assert collector.of_this_thread() == 0.0
    collector("start", {"generation": 2})
    clocks.cpu += 0.25
    collector("stop", {"generation": 2})
    other: list[float] = []
    thread = threading.Thread(target=lambda: other.append(collector.of_this_thread()))
    thread.start()
    thread.join()
    assert collector.of_this_thread() == 0.25 and other == [0.0]


def test_the_collector_reports_real_full_collections() -> None:
    import gc

    from streams.rendering import budget as module

    before = module._collector.of_this_thread()
    gc.collect()  # a full collection, in this thread: timed however short it is
    assert module._collector.of_this_thread() > before

"""Render budgets: what one mail's templates may cost, enforced while they render.

Tenants write their own templates, so a template is untrusted code that runs on the worker's event
loop. Like Shopify's Liquid (render score, assign score, output length), every mail renders under a
``RenderBudget``; a template that exceeds it fails *that mail* (``BudgetExceeded`` -> the renderer's
``RenderFailed`` -> dead letter ``render_failed``, the detail naming the budget), never the worker.

How it is enforced, and why this way
------------------------------------
In-process instrumentation of the sandbox, with no render thread or process. Jinja2 compiles a
template to Python; ``BudgetedEnvironment`` changes what it compiles to, so that every point where
a template can spend without bound passes through a check:

- **loop iterations**: every ``for`` loop's iterable (and the iterable of a recursive ``loop(...)``
  call) is wrapped so that taking an item counts one step (``BudgetIter`` node);
- **calls**: every call a template makes (macros, methods, globals, ``caller()``, blocks) and every
  filter counts one step; macro, block and recursive-loop calls also count nesting depth;
- **output**: every write (template text, ``{{ ... }}``, into a macro's or ``set`` block's buffer
  too) is counted before it is appended, so no buffer grows past the budget;
- **values**: the operators that can multiply a value (``*``, ``**``, ``%``, ``+``, ``~``), every
  filter and every method call whose result can be much larger than its input (``center``,
  ``replace``, ``join``, ``indent``, ``wordwrap``, ``format`` ...) are *estimated before they run*
  (``'x' * 10**9`` is refused before a byte is allocated; ``10 ** 10 ** 8`` before a digit is
  computed), and every result is measured after; lazy iterables a filter consumes are drawn item by
  item under the step budget. Numbers are bounded in bits, any integer argument of a call in size;
- **time**: each of those checks also checks the thread's CPU time, so a template that stays within
  every count but is slow still stops at the CPU budget (at the first check after it; the CPU clock,
  a system call, is read only once the wall clock says the deadline could have passed:
  ``Meter.check_time``).

Nothing a template says is evaluated at compile time: Jinja's optimizer is off, filters are
context-bound (which Jinja never folds) and intercepted operators are never folded, so compiling
``{{ 10 ** 5000 }}`` or ``{{ ('x' * 3000000000)|length }}`` costs nothing (the tenant check and the
lint compile every override).

Why not a render thread or process with a hard deadline: a thread cannot be stopped in Python,
so it would not bound anything the instrumentation misses either, only move it off the loop; a
process per render (or a pool with kill-on-deadline) would bound everything, but costs a
serialised context and a compiled-template cache per process for every mail, and a killed worker
process must be replaced; the instrumentation makes each single step small (the largest single
operation a template can trigger works on at most ``max_value_chars``), so the CPU check between
steps is a deadline with a bounded overshoot, measured in ``tests/benchmarks/test_hostile.py``. The CSS
inliner (Rust) runs on the rendered HTML outside the meter, when it has rules to inline
(``streams/rendering/css.py``); its work (style rules x elements) is bounded before it runs (``css_check``).

The meter is per mail (all three parts, attachment names), held in a context variable while the
renderer renders; without an active meter (tools that compile or render outside the renderer) the
per-operation size rules still hold with the default budget, but nothing is counted.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import gc
import inspect
import re
import string
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from jinja2 import Template, nodes, pass_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import BlockReference, Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from markupsafe import Markup, escape

try:
    # escape() is this C function's result wrapped in a Markup; the outputs need only the text.
    from markupsafe import _escape_inner
except ImportError:  # pragma: no cover - MarkupSafe before 3.0 has no separate function

    def _escape_inner(s: str, /) -> str:
        return str(escape(s))

# Integers a template computes stay below this many bits (10**1233): far beyond any amount or
# count a mail shows, small enough that no arithmetic on them is slow.
MAX_INT_BITS = 4096
# Macro, block and recursive-loop calls nested deeper than this fail the mail; legitimate
# templates nest a handful, and each level may hold values up to max_value_chars.
MAX_CALL_DEPTH = 32
# Everything a mail's render produces (values and writes, summed) is bounded by this many times the
# largest single value: the memory a render can hold at once.
PRODUCED_FACTOR = 16
# The CSS inliner (Rust, outside the meter) matches every style rule against every element: a
# 220 KB mail of 5,000 rules and 20,000 elements took 3.7 s of CPU. Its work is bounded by
# refusing HTML whose rules x elements (counted as "{" x "<", an over-estimate) exceed this; the
# packs' largest mail has 660, this is ~10 ms of inlining.
MAX_CSS_WORK = 250_000
# What ``lipsum()`` may generate (Jinja's default takes any count).
MAX_LIPSUM_PARAGRAPHS = 10


class BudgetExceeded(Exception):
    """A template went over one of its mail's render budgets; ``budget`` names which."""

    def __init__(self, budget: str, detail: str) -> None:
        super().__init__(f"render budget '{budget}' exceeded: {detail}")
        self.budget = budget


@dataclass(frozen=True)
class RenderBudget:
    """Limits for one mail's render; the defaults are far above any template of the four packs."""

    max_iterations: int = 20_000
    max_cpu_seconds: float = 0.1
    max_subject_chars: int = 1_000
    max_html_chars: int = 256 * 1024
    max_text_chars: int = 128 * 1024

    @property
    def max_value_chars(self) -> int:
        """The largest single value (string, list) a template may build: the largest part."""
        return max(self.max_html_chars, self.max_text_chars, self.max_subject_chars)

    @property
    def max_produced_chars(self) -> int:
        return PRODUCED_FACTOR * self.max_value_chars

    @classmethod
    def from_settings(cls, settings: Any) -> RenderBudget:
        return cls(
            max_iterations=settings.render_max_iterations,
            max_cpu_seconds=settings.render_max_cpu_seconds,
            max_subject_chars=settings.render_max_subject_chars,
            max_html_chars=settings.render_max_html_chars,
            max_text_chars=settings.render_max_text_chars,
        )

    def part_limit(self, part: str) -> int:
        if part.startswith("subject"):
            return self.max_subject_chars
        if part.endswith(".html"):
            return self.max_html_chars
        return self.max_text_chars


SETTING = {
    "iterations": "TIDINGS_RENDER_MAX_ITERATIONS",
    "cpu_time": "TIDINGS_RENDER_MAX_CPU_SECONDS",
    "subject": "TIDINGS_RENDER_MAX_SUBJECT_CHARS",
    "html": "TIDINGS_RENDER_MAX_HTML_CHARS",
    "text": "TIDINGS_RENDER_MAX_TEXT_CHARS",
}


class _CollectorTime:
    """CPU seconds each thread has spent in the garbage collector's full collections.

    A full (generation 2) collection walks every object of the process; in a worker holding
    a large timer index or ledger cache it takes a tenth of a second or more (the unit and agent
    tests alone: 125-156 ms). It runs in whichever thread allocates when it is due, so it can fall
    inside a render, and counted against the render's CPU budget it failed a valid mail as
    ``cpu_time`` (it did, in the test suite). The meter subtracts it: the budget is for what the
    templates do. Only full collections are timed: the young generations' are short, and timing
    each of them (thousands a second) would cost more than they do.
    """

    def __init__(self) -> None:
        self.spent: dict[int, float] = {}
        self._started: dict[int, float] = {}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        thread = threading.get_ident()
        if phase == "start":
            self._started[thread] = time.thread_time()
        elif (started := self._started.pop(thread, None)) is not None:
            self.spent[thread] = self.spent.get(thread, 0.0) + time.thread_time() - started

    def of_this_thread(self) -> float:
        return self.spent.get(threading.get_ident(), 0.0)


_collector = _CollectorTime()
gc.callbacks.append(_collector)


class Meter:
    """What one mail's render has spent so far, against its ``RenderBudget``."""

    __slots__ = (
        "budget", "steps", "produced", "depth", "max_steps", "max_produced", "max_value", "_deadline", "_next_read", "_collected",
    )

    def __init__(self, budget: RenderBudget) -> None:
        self.budget = budget
        self.steps = 0
        self.produced = 0
        self.depth = 0
        # The limits as plain attributes: they are read at every step, write and value.
        self.max_steps = budget.max_iterations
        self.max_produced = budget.max_produced_chars
        self.max_value = budget.max_value_chars
        wall = time.perf_counter()  # read before the CPU clock, so that _next_read errs early
        self._deadline = time.thread_time() + budget.max_cpu_seconds
        self._next_read = wall + budget.max_cpu_seconds
        self._collected = _collector.of_this_thread()

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise BudgetExceeded(
                "iterations",
                f"more than {self.budget.max_iterations} loop iterations and calls ({SETTING['iterations']})",
            )
        self.check_time()

    def check_time(self) -> None:
        """Fail once the thread has spent its CPU budget; exact, yet reading the CPU clock rarely.

        The thread's CPU clock is a system call (about 1 us, some 70 reads in a mail of the packs),
        the monotonic wall clock a few tens of nanoseconds. A thread cannot spend more CPU time than
        passes on the wall clock, so until the wall clock has advanced by the CPU budget that was
        left at the last reading, the deadline cannot have passed: only then is the CPU clock read
        again. A mail of the packs reads it once, at the start; a slow template reads it more often
        the closer it gets to the deadline, and fails at the first check after it, as before.
        """
        if time.perf_counter() < self._next_read:
            return
        wall = time.perf_counter()
        # The collector's full collections since the start are not the templates' doing (_CollectorTime).
        cpu = time.thread_time() - (_collector.of_this_thread() - self._collected)
        if cpu > self._deadline:
            raise BudgetExceeded("cpu_time", f"more than {self.budget.max_cpu_seconds:g} s of CPU ({SETTING['cpu_time']})")
        self._next_read = wall + (self._deadline - cpu)

    def produce(self, chars: int) -> None:
        # Written out as well where templates write and values are measured (check_value,
        # _budget_write: some 60 times a mail), where the call cost more than its body.
        self.produced += chars
        if self.produced > self.max_produced:
            raise self.over_produced()
        # check_time's own first test, here: the call it saves cost more than the test
        if time.perf_counter() >= self._next_read:
            self.check_time()

    def over_produced(self) -> BudgetExceeded:
        return BudgetExceeded(
            "output",
            f"the templates produced more than {self.budget.max_produced_chars} characters in all "
            f"({PRODUCED_FACTOR} x the largest part, {SETTING['html']})",
        )


_current: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("tidings_render_meter", default=None)
_DEFAULT = RenderBudget()


@contextmanager
def metered(budget: RenderBudget) -> Iterator[Meter]:
    """Render inside this block to count against a fresh meter of ``budget``."""
    meter = Meter(budget)
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def _meter() -> Meter | None:
    return _current.get()


def _limits() -> RenderBudget:
    meter = _current.get()
    return meter.budget if meter is not None else _DEFAULT


def _too_large(what: str, size: int, limit: int) -> BudgetExceeded:
    return BudgetExceeded(
        "output", f"{what} would be {'over ' if size > limit else ''}{size} characters, over the {limit} a value may have ({SETTING['html']})"
    )


def weight(value: Any, limit: int) -> int:
    """About how many characters ``value`` takes as text, counted only up to just past ``limit``.

    Strings count their length, containers one per item plus their items (shared items each time
    they appear: that is what printing or joining them costs), numbers their digits. Stops as soon
    as the total passes ``limit``, so measuring costs at most ``limit`` steps.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, Mapping):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += 1
        if total > limit:
            return total
    return total


def check_value(value: Any, what: str = "a value") -> Any:
    """Refuse ``value`` if it is larger than a value may be; count it as produced."""
    meter = _current.get()
    limit = meter.max_value if meter is not None else _DEFAULT.max_value_chars
    if isinstance(value, str):
        size = len(value)  # what weight() returns for a string, without its loop: most values are strings
    else:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded("number_size", f"{what} would have more than {MAX_INT_BITS} bits")
        size = weight(value, limit)
    if size > limit:
        raise _too_large(what, size, limit)
    if meter is not None:  # meter.produce(size)
        meter.produced += size
        if meter.produced > meter.max_produced:
            raise meter.over_produced()
        if time.perf_counter() >= meter._next_read:
            meter.check_time()
    return value


def _expect(what: str, size: int) -> None:
    """Refuse an operation whose result is estimated at ``size`` characters before it runs."""
    limit = _limits().max_value_chars
    if size > limit:
        raise _too_large(what, size, limit)


def _int_args(args: Iterable[Any], what: str) -> None:
    limit = _limits().max_value_chars
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > limit:
            raise BudgetExceeded("number_size", f"{what} was given {arg if arg.bit_length() < 64 else 'a huge number'}, over {limit}")


def _text_len(value: Any) -> int:
    return weight(value, _limits().max_value_chars)


def _largest_number(text: str, args: Iterable[Any]) -> int:
    """The largest width or precision a format string may ask for (its digits, or a number passed in)."""
    numbers = [int(d) for d in re.findall(r"\d{1,12}", text)]
    numbers.extend(abs(a) for a in args if isinstance(a, int) and not isinstance(a, bool))
    return max(numbers, default=0)


def _format_estimate(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], percent: bool) -> int:
    """An upper bound of a ``%``- or ``{}``-format's result: each field at most the largest argument, widened."""
    values = [*args, *kwargs.values()]
    limit = _limits().max_value_chars
    largest = max((weight(v, limit) for v in values), default=0)
    if percent:
        fields = fmt.count("%")
        literal = len(fmt)
    else:
        try:
            parsed = list(string.Formatter().parse(fmt))
        except ValueError:
            return len(fmt)  # str.format will raise the same error
        fields = sum(1 for _, name, _, _ in parsed if name is not None)
        literal = sum(len(text) for text, _, _, _ in parsed)
    return literal + fields * (largest + _largest_number(fmt, values) + 2)


# ---- operators -------------------------------------------------------------------------------

_SEQUENCES = (str, bytes, list, tuple)


def _binop(operator: str, left: Any, right: Any) -> Any:
    meter = _current.get()
    if meter is not None:
        meter.step()
    limit = _limits().max_value_chars
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int) and not isinstance(times, bool):
                _expect("a repeated value", max(times, 0) * weight(seq, limit))
        if _is_int(left) and _is_int(right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded("number_size", f"a product would have more than {MAX_INT_BITS} bits")
        result = left * right
    elif operator == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1 and right * left.bit_length() > MAX_INT_BITS:
            raise BudgetExceeded("number_size", f"a power would have more than {MAX_INT_BITS} bits")
        result = left**right
    elif operator == "%":
        if isinstance(left, str):
            args = right if isinstance(right, tuple) else (right,)
            kwargs = right if isinstance(right, Mapping) else {}
            _expect("a %-formatted string", _format_estimate(left, args, kwargs, percent=True))
        result = left % right
    elif operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            _expect("a concatenation", weight(left, limit) + weight(right, limit))
        result = left + right
    else:  # not intercepted; kept for completeness
        raise AssertionError(operator)
    return check_value(result, f"the result of {operator}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _concat(join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
    """``a ~ b ~ c``: refused when the parts add up to more than a value may have."""
    limit = _limits().max_value_chars
    total = 0
    for part in parts:
        total += weight(part, limit)
        _expect("a ~ concatenation", total)
    return check_value(join(parts), "a ~ concatenation")


# ---- filters and calls -----------------------------------------------------------------------


def _draw(iterable: Iterator[Any], what: str) -> list[Any]:
    """A lazy iterable drawn item by item under the step and size budgets."""
    meter = _current.get()
    limit = _limits().max_value_chars
    items: list[Any] = []
    total = 0
    for item in iterable:
        if meter is not None:
            meter.step()
        total += 1 + weight(item, limit)
        if total > limit:
            raise _too_large(what, total, limit)
        items.append(item)
    return items


def _count_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    """A for loop's iterable: each item taken is one step."""
    meter = _current.get()
    if meter is None:
        yield from iterable
        return
    for item in iterable:
        meter.step()
        yield item


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _replace_estimate(text: str, old: Any, new: Any, count: Any = None) -> int:
    old, new = _as_text(old), _as_text(new)
    hits = len(text) + 1 if old == "" else text.count(old)
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * len(new)


def _join_estimate(items: list[Any], separator: Any) -> int:
    limit = _limits().max_value_chars
    total = max(len(items) - 1, 0) * len(_as_text(separator))
    for item in items:
        total += weight(item, limit)
        if total > limit:
            break
    return total


def _width(value: Any) -> int:
    return len(value) if isinstance(value, str) else value if _is_int(value) else 0


# Filters whose result can be much larger than their input, and an upper bound of it.
_FILTER_ESTIMATES: dict[str, Callable[[dict[str, Any]], int]] = {
    "center": lambda a: len(_as_text(a["value"])) + max(_width(a.get("width", 80)), 0),
    "indent": lambda a: (_as_text(a["s"]).count("\n") + 2) * (max(_width(a.get("width", 4)), 0) + 1) + len(_as_text(a["s"])),
    "wordwrap": lambda a: len(_as_text(a["s"])) * (2 + len(_as_text(a.get("wrapstring") or "\n"))),
    "replace": lambda a: _replace_estimate(_as_text(a["s"]), a["old"], a["new"], a.get("count")),
    "join": lambda a: _join_estimate(list(a["value"]), a.get("d", "")),
    "format": lambda a: _format_estimate(_as_text(a["value"]), tuple(a.get("args", ())), a.get("kwargs", {}), percent=True),
    "truncate": lambda a: min(len(_as_text(a["s"])), max(_width(a.get("length", 255)), 0)) + len(_as_text(a.get("end", "..."))),
    "batch": lambda a: weight(a["value"], _limits().max_value_chars) + max(_width(a["linecount"]), 0) * (1 + weight(a.get("fill_with"), 64)),
    "slice": lambda a: weight(a["value"], _limits().max_value_chars) + max(_width(a["slices"]), 0) * (1 + weight(a.get("fill_with"), 64)),
    "tojson": lambda a: weight(a["value"], _limits().max_value_chars) * (2 + _width(a.get("indent") or 0)),
    "urlize": lambda a: len(_as_text(a["value"])) * (
        8 + sum(len(_as_text(a.get(k) or "")) for k in ("target", "rel")) + sum(len(_as_text(s)) for s in a.get("extra_schemes") or ())
    ),
    "pprint": lambda a: 4 * weight(a["value"], _limits().max_value_chars),
}


@lru_cache(maxsize=None)
def _signature(func: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(func)


def _bind(func: Callable[..., Any], pre: tuple[Any, ...], value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = _signature(func).bind(*pre, value, *args, **kwargs)
    return dict(bound.arguments)


# What filters mostly take and give (merge tags, formatted dates and amounts): none is an iterator,
# and a type test costs a fraction of an isinstance against the Iterator ABC (twice a filter call).
_NOT_ITERATORS = frozenset({str, Markup, int, float, bool, type(None), dict, list, tuple, dt.date, dt.datetime, Decimal})


def budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` counted, estimated and measured; context-bound, so Jinja never folds it at compile time."""
    pass_arg = _PassArg.from_obj(func)
    estimate = _FILTER_ESTIMATES.get(name)
    is_sum, result_of = name == "sum", f"the result of |{name}"

    @pass_context
    def budgeted(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
        meter = _current.get()
        if meter is not None:
            meter.step()
        if type(value) not in _NOT_ITERATORS and isinstance(value, Iterator):
            value = _draw(value, f"the input of |{name}")
        if is_sum and not isinstance(kwargs.get("start", args[1] if len(args) > 1 else 0), (int, float)):
            raise BudgetExceeded("output", "|sum adds numbers only (a start that is not a number would copy lists over and over)")
        if pass_arg is _PassArg.context:
            pre: tuple[Any, ...] = (context,)
        elif pass_arg is _PassArg.eval_context:
            pre = (context.eval_ctx,)
        elif pass_arg is _PassArg.environment:
            pre = (context.environment,)
        else:
            pre = ()
        if estimate is not None:
            try:
                bound = _bind(func, pre, value, args, kwargs)
            except TypeError:
                bound = None  # the call itself will raise the same error
            if bound is not None:
                _expect(f"the result of |{name}", estimate(bound))
        result = func(*pre, value, *args, **kwargs)
        if type(result) not in _NOT_ITERATORS and isinstance(result, Iterator):
            return result  # lazy (map, select ...): measured where it is drawn
        return check_value(result, result_of)

    budgeted.__name__ = getattr(func, "__name__", name)
    budgeted.__doc__ = func.__doc__
    return budgeted


# str methods a template may call, and for those that can grow a string, an upper bound of the result.
_STR_METHODS: dict[str, Callable[[str, tuple[Any, ...]], int] | None] = {
    **dict.fromkeys(
        (
            "capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit "
            "isidentifier islower isnumeric isprintable isspace istitle isupper lower lstrip partition "
            "removeprefix removesuffix rfind rindex rpartition rsplit rstrip split splitlines startswith "
            "strip swapcase title upper encode decode striptags unescape"
        ).split()
    ),
    "center": lambda s, a: len(s) + (_width(a[0]) if a else 0),
    "ljust": lambda s, a: len(s) + (_width(a[0]) if a else 0),
    "rjust": lambda s, a: len(s) + (_width(a[0]) if a else 0),
    "zfill": lambda s, a: len(s) + (_width(a[0]) if a else 0),
    "replace": lambda s, a: _replace_estimate(s, *a[:3]) if len(a) >= 2 else len(s),
    "join": lambda s, a: _join_estimate(list(a[0]), s) if a else 0,
}


def _method_owner(obj: Any) -> tuple[Any, str] | None:
    """The object and name of a bound builtin method, if ``obj`` is one."""
    owner = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", None)
    if owner is None or not isinstance(name, str) or inspect.ismodule(owner):
        return None
    return owner, name


def _env_call(method: str, arg: nodes.Expr, lineno: int) -> nodes.Call:
    """``environment.<method>(arg)`` as a node (Jinja allows no custom node types); see ``visit_Call``."""
    return nodes.Call(nodes.EnvironmentAttribute(method, lineno=lineno), [arg], [], None, None, lineno=lineno)


class BudgetedCodeGenerator(CodeGenerator):
    """Jinja's code generator with a budget check at every loop item, write and ``~``.

    Loop iterables and output expressions are wrapped in calls of the environment's ``_budget_*``
    methods, which this generator writes as direct calls (not through the sandbox's ``call``);
    a template cannot name them (the parser never makes ``EnvironmentAttribute`` nodes, and the
    sandbox refuses attributes starting with an underscore).
    """

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        target = node.node
        if isinstance(target, nodes.EnvironmentAttribute) and target.name.startswith("_budget_"):
            self.write(f"environment.{target.name}(")
            self.visit(node.args[0], frame)
            self.write(")")
            return
        super().visit_Call(node, frame, forward_caller=forward_caller)

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # Jinja types For.iter as Node; its parser only ever puts an expression there (parse_tuple).
        iterable = cast(nodes.Expr, node.iter)
        counted = nodes.For(
            node.target, _env_call("_budget_iter", iterable, node.lineno), node.body, node.else_, node.test, node.recursive,
            lineno=node.lineno,
        )
        counted.environment = node.environment
        super().visit_For(counted, frame)

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:
        if frame.require_output_check and self.has_known_extends:
            return
        text = sum(len(child.data) for child in node.nodes if isinstance(child, nodes.TemplateData))
        if text:
            self.writeline(f"environment._budget_write({text})")
        if self._make_finalize().src is None:
            # Each expression is measured and escaped (or made text) in one call: _output_child_pre.
            super().visit_Output(node, frame)
            return
        measured = nodes.Output(
            [c if isinstance(c, nodes.TemplateData) else _env_call("_budget_out", c, c.lineno) for c in node.nodes],
            lineno=node.lineno,
        )
        measured.environment = node.environment
        super().visit_Output(measured, frame)

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        # Jinja writes escape(...) or str(...) around an output expression; escape() wraps its
        # result in a Markup (a Python-level __new__, 0.3 us, some twenty times an HTML mail),
        # though an output is only ever joined into the text. With a finalize function (none
        # here) the expression stays wrapped in _budget_out, under Jinja's own escape or str.
        if finalize.src is not None:
            super()._output_child_pre(node, frame, finalize)
        elif frame.eval_ctx.volatile:
            self.write("(environment._budget_escaped if context.eval_ctx.autoescape else environment._budget_text)(")
        elif frame.eval_ctx.autoescape:
            self.write("environment._budget_escaped(")
        else:
            self.write("environment._budget_text(")

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment._budget_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_DICT_ATTRIBUTES = frozenset(dir(dict))


class BudgetedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with every template's spending counted against the active meter.

    Immutable: a template cannot grow a list or dict in place (``append``, ``update``), so every
    value it builds passes through an operator, a filter or a call, where it is measured.
    """

    code_generator_class = BudgetedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("optimized", False)  # no constant folding: nothing a template says runs at compile time
        super().__init__(*args, **kwargs)
        self.globals["lipsum"] = _bounded_lipsum
        self._loaded: dict[tuple[Any, str, str | None], Template] = {}

    def get_template(
        self, name: str | Template, parent: str | None = None, globals: MutableMapping[str, Any] | None = None  # noqa: A002 - Jinja's name
    ) -> Template:
        # A layout is loaded by name at every render of a template that extends it (the generated
        # code calls this), and Jinja's cache takes a weak reference, a lock and a turn of its LRU
        # queue for each: loaded templates are kept in a dict of their own as well, as long as
        # Jinja would keep them without reloading (no auto_reload, a cache) and up to its size.
        if globals or self.auto_reload or self.cache is None or not isinstance(name, str):
            return super().get_template(name, parent, globals)
        key = (self.loader, name, parent)
        template = self._loaded.get(key)
        if template is None:
            template = super().get_template(name, parent)
            limit = getattr(self.cache, "capacity", None)  # Jinja's LRU; a plain dict when unbounded
            if limit is not None and len(self._loaded) >= limit:
                self._loaded.clear()
            self._loaded[key] = template
        return template

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # Jinja chains a template's globals to the environment's (a ChainMap) and copies the chain
        # into a fresh dict at every render, three times a mail: 4.5 us a time against 0.9 for a
        # dict. The environment's globals are complete once it is built (nothing here adds any
        # later: a global added then would not reach templates already loaded), so a template
        # gets a copy of them with its own on top.
        return {**self.globals, **(d or {})}

    def budget_filters(self) -> None:
        """Wrap every filter registered so far; call after adding the environment's own filters."""
        self.filters = {name: budgeted_filter(name, f) for name, f in self.filters.items()}

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A merge tag such as ``customer.name`` is a dict item: Jinja tries the attribute first and
        # takes the item after an AttributeError (about a microsecond per tag). A plain dict has no
        # attribute but dict's own, so for any other name the item is taken at once; the rest
        # (methods, dunders, missing keys, other objects) goes through the sandbox as before.
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return _binop(operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        meter = _current.get()
        if meter is not None:
            meter.step()
        nests = isinstance(__obj, (Macro, BlockReference, LoopContext))
        if isinstance(__obj, LoopContext) and args:
            args = (_count_iter(args[0]), *args[1:])
        wrapped = getattr(__obj, "__wrapped__", None)  # str.format, sandboxed by Jinja at attribute access
        if wrapped is not None and getattr(wrapped, "__name__", "") in ("format", "format_map"):
            fmt = getattr(wrapped, "__self__", "")
            if isinstance(fmt, str):
                mapping = args[0] if wrapped.__name__ == "format_map" and args and isinstance(args[0], Mapping) else kwargs
                _expect("a formatted string", _format_estimate(fmt, args, mapping, percent=False))
        else:
            _check_method(__obj, args)
        if nests and meter is not None:
            meter.depth += 1
            try:
                if meter.depth > MAX_CALL_DEPTH:
                    raise BudgetExceeded("depth", f"macros, blocks or recursive loops nested more than {MAX_CALL_DEPTH} deep")
                result = super().call(__context, __obj, *args, **kwargs)
            finally:
                meter.depth -= 1
        else:
            result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, Iterator):
            return result
        return check_value(result, "the result of a call")

    # Called by the compiled template (see BudgetedCodeGenerator); not reachable from a template,
    # whose attribute access the sandbox refuses for names starting with an underscore.
    def _budget_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        return _count_iter(iterable)

    def _budget_write(self, chars: int) -> None:
        meter = _current.get()
        if meter is not None:  # meter.produce(chars)
            meter.produced += chars
            if meter.produced > meter.max_produced:
                raise meter.over_produced()
            if time.perf_counter() >= meter._next_read:
                meter.check_time()

    def _budget_out(self, value: Any) -> Any:
        return check_value(value, "an output")

    def _budget_escaped(self, value: Any) -> str:
        """An HTML output: measured, then escaped as ``escape`` would, but as a plain str."""
        check_value(value, "an output")
        return _escape_inner(value) if type(value) is str else escape(value)

    def _budget_text(self, value: Any) -> str:
        """A text output: measured, then made a str (``str`` of a str is the str itself)."""
        check_value(value, "an output")
        return value if type(value) is str else str(value)

    def _budget_concat(self, join: Callable[[Iterable[Any]], str], parts: tuple[Any, ...]) -> str:
        return _concat(join, parts)


def _check_method(obj: Any, args: tuple[Any, ...]) -> None:
    """Refuse a str/bytes method that is not on the list, or whose result would be too large.

    Any builtin method (``int.to_bytes``, ``Decimal.scaleb`` ...) takes no integer larger than a
    value may be long: such an argument is a size or a count in every case that matters.
    """
    found = _method_owner(obj)
    if found is None:
        return
    owner, name = found
    if isinstance(obj, (types.BuiltinMethodType, types.MethodWrapperType)):
        _int_args(args, f"{type(owner).__name__}.{name}")
    if not isinstance(owner, (str, bytes)):
        return
    if name not in _STR_METHODS:
        raise BudgetExceeded("output", f"templates may not call str.{name}")
    estimate = _STR_METHODS[name]
    if estimate is not None:
        text = owner if isinstance(owner, str) else owner.decode("latin-1")
        if name == "join" and args and isinstance(args[0], Iterator):
            raise BudgetExceeded("output", "str.join takes a list in templates; use the |join filter")
        _expect(f"the result of str.{name}", estimate(text, args))


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    """Jinja's ``lipsum``, at most ``MAX_LIPSUM_PARAGRAPHS`` paragraphs of at most 100 words."""
    from jinja2.utils import generate_lorem_ipsum

    n = max_(0, min_(int(n), MAX_LIPSUM_PARAGRAPHS))
    low = max_(1, min_(int(min), 100))
    return generate_lorem_ipsum(n=n, html=bool(html), min=low, max=max_(low, min_(int(max), 100)))


min_, max_ = min, max


def part_check(budget: RenderBudget, name: str, rendered: str) -> str:
    """Refuse a rendered part longer than its budget (``subject.txt``, ``body.html``, ``body.txt``)."""
    limit = budget.part_limit(name)
    if len(rendered) > limit:
        which = "subject" if name.startswith("subject") else "html" if name.endswith(".html") else "text"
        raise BudgetExceeded(which, f"{name} rendered {len(rendered)} characters, over {limit} ({SETTING[which]})")
    return rendered


def css_check(html: str) -> None:
    """Refuse HTML whose CSS inlining would cost more than ``MAX_CSS_WORK`` rule-element matches."""
    rules, elements = html.count("{"), html.count("<")
    if rules * elements > MAX_CSS_WORK:
        raise BudgetExceeded(
            "css", f"{rules} style rules x {elements} elements is more CSS inlining than a mail may need ({MAX_CSS_WORK})"
        )

"""Conditions of packs on event fields (``if`` of an entity update) and on entity state (``when``).

A condition is a mapping ``field -> test``. A scalar test is equality; a mapping test holds
operators: ``lt le gt ge ne`` (ordering), ``in`` (one of a list), ``present`` (true: has a value,
false: null or missing). A value written ``$name`` is a parameter: the tenant's value for the
trigger, else the pack's default. Fields are dotted paths. An ordering test against a missing
value is false, never an error: a state that lacks the field simply does not qualify.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.errors import ConfigurationError

OPERATORS = frozenset({"lt", "le", "gt", "ge", "ne", "in", "present"})


def lookup(values: Mapping[str, Any], path: str) -> Any:
    value: Any = values
    steps = _STEPS.get(path)
    if steps is None:
        steps = _STEPS[path] = tuple(path.split("."))
    for step in steps:
        # type() first: an ABC isinstance check costs more than the lookup, and it is almost
        # always a plain dict (timers revalidate ten thousand states a tick)
        if type(value) is not dict and not isinstance(value, Mapping):
            return None
        value = value.get(step)
    return value


_STEPS: dict[str, tuple[str, ...]] = {}  # the paths of the packs' rules and templates: a few hundred


def resolve(value: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("$"):
        name = value[1:]
        if name not in params:
            raise ConfigurationError(f"condition uses ${name}, which has no value or default")
        return params[name]
    return value


def matches(condition: Mapping[str, Any], values: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> bool:
    params = params or {}
    for path, test in condition.items():
        actual = lookup(values, path)
        # type() first, as in lookup: most tests are a string (``status: active``), and the ABC
        # isinstance is the dearest step of the test
        if type(test) is dict or (type(test) is not str and isinstance(test, Mapping)):
            for op, raw in test.items():
                if not _holds(op, actual, resolve(raw, params)):
                    return False
        elif actual != resolve(test, params):
            return False
    return True


def _holds(op: str, actual: Any, expected: Any) -> bool:
    if op == "present":
        return (actual is not None) == bool(expected)
    if op == "in":
        return actual in expected
    if op == "ne":
        return actual != expected
    if actual is None:
        return False
    try:
        if op == "lt":
            return bool(actual < expected)
        if op == "le":
            return bool(actual <= expected)
        if op == "gt":
            return bool(actual > expected)
        if op == "ge":
            return bool(actual >= expected)
    except TypeError:
        return False
    raise ConfigurationError(f"unknown condition operator {op!r}; use one of {sorted(OPERATORS)}")


def problems(condition: Mapping[str, Any]) -> list[str]:
    """What is wrong with a condition as written in a pack (checked when packs load)."""
    out = []
    for path, test in condition.items():
        if isinstance(test, Mapping):
            out += [f"{path}: unknown operator {op!r}" for op in test if op not in OPERATORS]
    return out

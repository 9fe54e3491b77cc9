"""Markers set from what a test does, for the inner loop (``python -m pytest -m quick``).

Nothing is decorated by hand: at collection, a test gets

- ``subprocess`` when it, a fixture it uses, or a function of its module it calls (two levels
  deep) starts another Python process (the CLI entry point, a notebook kernel, a worker or
  lock-holder script): each such process pays Python, torch and model start-up, seconds each;
- ``ray`` when it uses the real local Ray cluster (the ``ray_address`` fixture);
- ``quick`` when it has none of those nor ``slow`` or ``browser``.

``python -m pytest -m quick`` is then the inner loop (every in-process unit, parity, oracle
and end-to-end test); the default run (``-m "not slow"``) runs everything else too. The
detection reads source text, so it errs on the side of marking: a false ``subprocess`` only
moves a test out of the inner loop, never out of the default run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

#: Text whose presence in a test's code means it starts another process.
SUBPROCESS_SIGNS = ("subprocess.", "Popen(", "sys.executable", "NotebookClient(")
#: Markers that keep a test out of the inner loop.
NOT_QUICK = ("slow", "browser", "subprocess", "ray")


@functools.cache
def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


@functools.cache
def _starts_a_process(func: Callable[..., Any], depth: int = 2) -> bool:
    """Whether ``func`` or a module-level function it names (``depth`` levels) spawns one."""
    func = inspect.unwrap(func)
    if any(sign in _source(func) for sign in SUBPROCESS_SIGNS):
        return True
    code = getattr(func, "__code__", None)
    if depth == 0 or code is None:
        return False
    names = set(code.co_names)
    for const in code.co_consts:  # names used inside nested functions and comprehensions
        if inspect.iscode(const):
            names.update(const.co_names)
    module_globals = getattr(func, "__globals__", {})
    return any(
        inspect.isfunction(helper) and _starts_a_process(helper, depth - 1)
        for helper in (module_globals.get(name) for name in names)
    )


def _fixture_functions(item: pytest.Item) -> list[Callable[..., Any]]:
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", {}) or {}
    return [d.func for seq in defs.values() for d in seq if callable(getattr(d, "func", None))]


def mark_by_behaviour(items: list[pytest.Item]) -> None:
    """Add ``subprocess``, ``ray`` and ``quick`` to collected tests (tests/conftest.py's hook)."""
    for item in items:
        fixturenames = getattr(item, "fixturenames", ())
        if "ray_address" in fixturenames:
            item.add_marker(pytest.mark.ray)
        funcs = [getattr(item, "function", None), *_fixture_functions(item)]
        if any(f is not None and _starts_a_process(f) for f in funcs):
            item.add_marker(pytest.mark.subprocess)
        if not any(item.get_closest_marker(name) for name in NOT_QUICK):
            item.add_marker(pytest.mark.quick)

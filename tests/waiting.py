"""The tests' one wait helper: poll a condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout: float = 20.0,
    interval: float = 0.05,
    *,
    give_up: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns something truthy, and return that.

    AssertionError naming ``what`` after ``timeout`` seconds, or as soon as ``give_up()`` gives a reason (a server
    process that exited); ``details()`` (logs, the current state) is added to the message.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        reason = give_up() if give_up is not None else None
        if reason is None and time.monotonic() > deadline:
            reason = f"timed out after {timeout:g} s"
        if reason is not None:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"{what}: {reason}{extra}")
        time.sleep(interval)

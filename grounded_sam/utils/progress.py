"""Progress bars for the long stages of indexing, and their wall times.

:class:`StageProgress` shows one tqdm bar per stage (SAM encoder, proposals, CLIP regions,
...) on stderr while it runs, and records how long each stage took so that callers can print
a one-line summary (:meth:`StageProgress.summary`). Disabled, it shows nothing but still
records the times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm.auto import tqdm

__all__ = ["StageProgress"]


class StageProgress:
    """Per-stage tqdm bars (stderr) and wall times.

    Args:
        enabled: Show bars; when False only the times are recorded.
        leave: Keep each finished bar on the terminal (False: it is cleared when done).
        on_stage: Called with a stage's name when it starts (e.g. to drive a progress
            indicator on a web page).
        **tqdm_kwargs: Extra arguments for every bar (e.g. ``file``, ``position``).

    Example::

        progress = StageProgress()
        with progress.stage("SAM encoder"):
            ...
        print(progress.summary())     # "SAM encoder 1.23s"
    """

    def __init__(
        self,
        enabled: bool = True,
        *,
        leave: bool = False,
        on_stage: Callable[[str], None] | None = None,
        **tqdm_kwargs: Any,
    ):
        self.enabled = enabled
        self.leave = leave
        self.on_stage = on_stage
        self.tqdm_kwargs = tqdm_kwargs
        self.timings: dict[str, float] = {}

    @classmethod
    def of(cls, show_progress: bool | StageProgress) -> StageProgress:
        """The caller's :class:`StageProgress`, or a new one shown when ``show_progress``."""
        if isinstance(show_progress, StageProgress):
            return show_progress
        return cls(enabled=bool(show_progress))

    @contextmanager
    def stage(
        self, name: str, total: int = 1, unit: str = "step", bar: bool = True
    ) -> Iterator[Any]:
        """Time a stage and show a bar for it while it runs.

        Args:
            name: Shown as the bar's description and used as the key in :attr:`timings`
                (times of stages with the same name add up).
            total: Steps of the stage; the bar is completed when the block ends.
            unit: Unit of a step.
            bar: False when the stage shows its own bar (only the time is recorded).

        Yields:
            The tqdm bar (call ``update(n)`` for finer progress), disabled when not shown.
        """
        if self.on_stage is not None:
            self.on_stage(name)
        shown = self.enabled and bar
        pbar = tqdm(
            total=total,
            desc=name,
            unit=unit,
            disable=not shown,
            leave=self.leave,
            **self.tqdm_kwargs,
        )
        t0 = time.perf_counter()
        try:
            yield pbar
            if pbar.total and pbar.n < pbar.total:
                pbar.update(pbar.total - pbar.n)
        finally:
            pbar.close()
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

    def summary(self) -> str:
        """``"SAM encoder 1.23s, proposals 4.56s, ..."`` in the order the stages ran."""
        return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in self.timings.items())

    @property
    def total(self) -> float:
        """Seconds spent in all stages."""
        return sum(self.timings.values())

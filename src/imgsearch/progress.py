"""Progress bars for long whole-collection work: a rich bar on a terminal, nothing otherwise (logs and CI stay clean)."""

from __future__ import annotations

import sys
from typing import Callable


class progress:
    """`with progress(total, "embedding") as advance: advance(n)`. `show=None`: only when stderr is a terminal."""

    def __init__(self, total: int, description: str, show: bool | None = None):
        self.total, self.description = total, description
        self.show = sys.stderr.isatty() if show is None else show
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self._bar.__enter__()
        task = self._bar.add_task(self.description, total=self.total)
        return lambda n: self._bar.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

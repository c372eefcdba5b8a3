"""A progress bar for CLI commands that run longer than a moment (rich, on stderr).

Quiet when stderr is not a terminal (cron, CI, pipes): nothing but the command's own
output is printed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

Step = Callable[[str], None]


@contextmanager
def stages(total: int, *, enabled: bool | None = None) -> Iterator[Step]:
    """``with stages(3) as step: step("reading"); ...``: each call starts the next stage."""
    console = Console(stderr=True)
    show = console.is_terminal if enabled is None else enabled
    progress = Progress(
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=False,
    )
    with progress:
        task = progress.add_task("", total=total)
        started = False

        def step(description: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=description)

        yield step
        progress.update(task, completed=total, description="done")

"""Progress display for prep: a rich live view (one line per stage) or plain log lines (`quiet=true`)."""

from __future__ import annotations

import logging
from typing import Any

from tunekit.prep.engine import StageStats

log = logging.getLogger("tunekit.prep")


class RichReporter:
    """One progress line per stage: rows done/total, hours of audio done, computed/cached/rejected, ETA."""

    def __init__(self, console: Any = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(bar_width=16),
            MofNCompleteColumn(),
            TextColumn("{task.fields[hours]:.2f} h"),
            TextColumn("new {task.fields[computed]} cached {task.fields[cached]} rej {task.fields[rejected]}"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.counts: dict[str, dict[str, float]] = {}

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_stage(self, name: str, total: int, audio_s: float) -> None:
        """Add the stage's line."""
        self.counts[name] = {"computed": 0, "cached": 0, "rejected": 0, "hours": 0.0}
        self.tasks[name] = self.progress.add_task(
            name, total=max(total, 0), hours=0.0, computed=0, cached=0, rejected=0
        )

    def advance(self, name: str, audio_s: float, outcome: str, rejected: bool = False) -> None:
        """Count one row done."""
        c = self.counts[name]
        c[outcome] = c.get(outcome, 0) + 1
        c["rejected"] += int(rejected)
        c["hours"] += audio_s / 3600.0
        self.progress.update(self.tasks[name], advance=1, **{k: v for k, v in c.items()})

    def end_stage(self, stats: StageStats) -> None:
        """Show the final counts (rejections are known once the stage is done)."""
        task = self.tasks.get(stats.name)
        if task is None:
            return
        total = self.progress.tasks[[t.id for t in self.progress.tasks].index(task)].total or 0
        self.progress.update(
            task, completed=total, computed=stats.computed, cached=stats.cached, rejected=stats.rejected
        )


class LogReporter:
    """Plain log lines (quiet mode, CI, a pipe): a progress line per running stage every `every_s` seconds,
    and one line per finished stage."""

    def __init__(self, every_s: float = 10.0, clock: Any = None) -> None:
        import time

        self.every_s = every_s
        self.clock = clock or time.monotonic
        self.started: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.hours: dict[str, float] = {}
        self.t0: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __enter__(self) -> LogReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_stage(self, name: str, total: int, audio_s: float) -> None:
        """Remember the stage's size and start time."""
        self.started[name] = total
        self.done[name] = 0
        self.hours[name] = 0.0
        self.t0[name] = self.last[name] = self.clock()

    def advance(self, name: str, audio_s: float, outcome: str, rejected: bool = False) -> None:
        """Count one row; log the stage's progress when `every_s` has passed since its last line."""
        if name not in self.started:
            return
        self.done[name] += 1
        self.hours[name] += audio_s / 3600.0
        now = self.clock()
        if now - self.last[name] < self.every_s or self.done[name] >= self.started[name]:
            return
        self.last[name] = now
        done, total = self.done[name], self.started[name]
        elapsed = now - self.t0[name]
        eta = elapsed / done * (total - done)
        log.info("stage %-9s %d/%d rows (%.0f%%) %.2f h of audio, %s elapsed, eta %s", name, done, total,
                 100.0 * done / max(total, 1), self.hours[name], _duration(elapsed), _duration(eta))

    def end_stage(self, stats: StageStats) -> None:
        """Log the stage's counts and time."""
        log.info(
            "stage %-9s rows %d computed %d cached %d rejected %d failed %d in %.1f s",
            stats.name,
            stats.rows,
            stats.computed,
            stats.cached,
            stats.rejected,
            stats.failed,
            stats.wall_s,
        )


def _duration(seconds: float) -> str:
    """12 s, 3m05s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"

"""Plain progress lines (quiet mode, pipes, CI): each long stage reports while it runs, not only at its end."""

from __future__ import annotations

import logging

from tunekit.prep.progress import LogReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_running_stage_logs_progress_every_interval(caplog):
    clock = Clock()
    reporter = LogReporter(every_s=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="tunekit.prep")
    reporter.start_stage("separate", total=40, audio_s=1200.0)
    for _ in range(40):
        clock.now += 3.0  # one row every 3 s: a line every fourth row
        reporter.advance("separate", audio_s=30.0, outcome="computed")
    lines = [r.getMessage() for r in caplog.records]
    assert 8 <= len(lines) <= 10, lines  # 120 s of work at one line per 10 s, none for the last row
    assert lines[0].startswith("stage separate  4/40 rows (10%) 0.03 h of audio, 12 s elapsed, eta 1m48s"), lines[0]
    assert all("eta" in line for line in lines)


def test_a_fast_stage_logs_no_progress_lines(caplog):
    clock = Clock()
    reporter = LogReporter(every_s=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="tunekit.prep")
    reporter.start_stage("license", total=100, audio_s=0.0)
    for _ in range(100):
        clock.now += 0.01
        reporter.advance("license", audio_s=0.0, outcome="computed")
    assert caplog.records == []

"""Throughput, memory and the run's metrics log, measured the same way by every trainer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


_rss_peak_before_reset = 0.0  # the process's peak RSS (GiB) up to the last reset_step_rss()


def host_rss_gib() -> tuple[float, float]:
    """(current, peak since the last reset) resident memory of this process in GiB, from /proc/self/status.

    Falls back to (peak, peak) from getrusage where /proc is not available.
    """
    now = peak = None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    value = int(line.split()[1]) / 2**20  # kB -> GiB
                    now, peak = (value, peak) if line.startswith("VmRSS") else (now, value)
    except OSError:
        pass
    if now is None or peak is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        return peak, peak
    return now, peak


def reset_step_rss() -> None:
    """Start a new window for the RSS high-water mark, so each step reports its own peak, not the largest so far.

    Linux resets the mark when "5" is written to /proc/self/clear_refs; where that fails the mark simply keeps
    growing. The process-wide peak across resets stays available from `process_rss_peak_gib`.
    """
    global _rss_peak_before_reset
    _rss_peak_before_reset = max(_rss_peak_before_reset, host_rss_gib()[1])
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def process_rss_peak_gib() -> float:
    """Peak resident memory of this process (GiB) since it started, across `reset_step_rss` windows.

    Not getrusage's ru_maxrss: after fork + exec that also counts the parent's memory at the fork.
    """
    return max(_rss_peak_before_reset, host_rss_gib()[1])


def peak_memory(device: Any) -> dict[str, float]:
    """Peak accelerator memory (GiB) since the last reset, and this process's peak host RSS (GiB)."""
    import torch

    out = {"rss_peak_gib": process_rss_peak_gib()}
    if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
        out["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["gpu_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return out


class StepTimer:
    """Tokens per second and the fraction of step time spent waiting for data, over a window of steps."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.t0 = time.perf_counter()
        self.data_s = 0.0
        self.tokens = 0
        self.steps = 0

    def add(self, tokens: int, data_s: float) -> None:
        """Record a finished step that trained on `tokens` tokens and waited `data_s` for its batches."""
        self.tokens += tokens
        self.data_s += data_s
        self.steps += 1

    def read(self) -> dict[str, float]:
        """tokens/s, seconds/step and data-wait fraction since the last reset (then resets)."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        out = {
            "tokens_per_s": self.tokens / elapsed,
            "s_per_step": elapsed / max(self.steps, 1),
            "data_wait_frac": self.data_s / elapsed,
        }
        self.reset()
        return out


class MetricsLog:
    """`<run>/metrics.jsonl`: one JSON object per line, flushed as written; truncated to a step on resume."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop rows a killed run logged after the checkpoint it is resumed from."""
        if not self.path.is_file():
            return
        from tunekit.atomic import write_text

        keep = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if int(row.get("step", 0)) <= step:
                keep.append(line)
        write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict[str, Any]]:
        """Every row written so far."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

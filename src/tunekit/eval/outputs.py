"""What `tunekit eval` writes: metrics.json and report.html in the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"


def write_outputs(out: Path, metrics: dict[str, Any], html: str) -> None:
    """metrics.json and report.html, written atomically."""
    from tunekit.atomic import write_json, write_text
    from tunekit.eval.report import finite_or_none

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / METRICS_FILE, finite_or_none(metrics))
    write_text(out / REPORT_FILE, html)

"""The prep output contract: tracks.parquet, windows.parquet, ATTRIBUTION.md, attribution.csv, summary.json.

Columns are listed here in a fixed order with fixed types (documented in data/README.md under
"Prep output"); later stages' `extra` fields are appended after them in sorted order. Rows are
sorted by source path (tracks) and by track then window index (windows), and the tables hold no
timestamps, so the same corpus and config always give byte-identical tables.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

from tunekit.atomic import atomic_path, write_json, write_text
from tunekit.prep.rows import OK, TrackRow, WindowRow

# (column, pyarrow type name) in output order.
TRACK_COLUMNS: list[tuple[str, str]] = [
    ("track_id", "string"),
    ("source_path", "string"),
    ("status", "string"),
    ("reason", "string"),
    ("reason_detail", "string"),
    ("failed_stage", "string"),
    ("license", "string"),
    ("license_raw", "string"),
    ("license_family", "string"),
    ("requires_attribution", "bool"),
    ("share_alike", "bool"),
    ("license_source", "string"),
    ("license_conflict", "string"),
    ("artist", "string"),
    ("title", "string"),
    ("attribution", "string"),
    ("source", "string"),
    ("source_id", "string"),
    ("url", "string"),
    ("genre", "string"),
    ("tags", "list<string>"),
    ("instrumental", "bool"),
    ("date_observed", "string"),
    ("metadata_problems", "list<string>"),
    ("content_hash", "string"),
    ("file_size", "int64"),
    ("extension", "string"),
    ("container", "string"),
    ("codec", "string"),
    ("lossy", "bool"),
    ("decoder", "string"),
    ("duration_s", "float64"),
    ("sample_rate_in", "int64"),
    ("channels_in", "int64"),
    ("frames_in", "int64"),
    ("bitrate_kbps", "float64"),
    ("nan_count", "int64"),
    ("clip_ratio", "float64"),
    ("peak_dbfs", "float64"),
    ("lufs_decoded", "float64"),
    ("hf_energy_db", "float64"),
    ("bandwidth_hz", "float64"),
    ("lufs_in", "float64"),
    ("lufs_out", "float64"),
    ("true_peak_in_dbtp", "float64"),
    ("true_peak_dbtp", "float64"),
    ("gain_db", "float64"),
    ("loudness_policy", "string"),
    ("loudness_capped", "bool"),
    ("limiter_gain_reduction_db", "float64"),
    ("split", "string"),
    ("audio_path", "string"),
    ("audio_rate", "int64"),
    ("n_windows", "int64"),
    ("windows_silent", "int64"),
]

WINDOW_COLUMNS: list[tuple[str, str]] = [
    ("window_id", "string"),
    ("track_id", "string"),
    ("window_index", "int64"),
    ("audio_path", "string"),
    ("offset_s", "float64"),
    ("duration_s", "float64"),
    ("start_s", "float64"),
    ("offset_frames", "int64"),
    ("frames", "int64"),
    ("sample_rate", "int64"),
    ("license", "string"),
    ("split", "string"),
    ("rms_dbfs", "float64"),
]


def _type(name: str) -> Any:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "bool": pa.bool_(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "list<string>": pa.list_(pa.string()),
    }[name]


def _table(records: list[dict[str, Any]], columns: list[tuple[str, str]], extras: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    arrays, fields = [], []
    for name, tname in columns:
        t = _type(tname)
        arrays.append(pa.array([r.get(name) for r in records], type=t))
        fields.append(pa.field(name, t))
    extra_names = sorted({k for e in extras for k in e} - {c for c, _ in columns})
    for name in extra_names:
        arr = pa.array([e.get(name) for e in extras])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _write_parquet(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), compression="zstd")


def track_record(row: TrackRow) -> dict[str, Any]:
    """A track row as its tracks.parquet record."""
    rec = {name: getattr(row, name, None) for name, _ in TRACK_COLUMNS}
    rec["n_windows"] = len(row.windows) if row.status == OK else 0
    return rec


def write_tables(rows: list[TrackRow], out: Path) -> tuple[int, int]:
    """Write tracks.parquet and windows.parquet; returns (tracks, windows) written."""
    tracks = [track_record(r) for r in rows]
    _write_parquet(_table(tracks, TRACK_COLUMNS, [r.extra for r in rows]), out / "tracks.parquet")
    windows: list[WindowRow] = [w for r in rows if r.status == OK for w in r.windows]
    records = [{name: getattr(w, name) for name, _ in WINDOW_COLUMNS} for w in windows]
    _write_parquet(_table(records, WINDOW_COLUMNS, [w.extra for w in windows]), out / "windows.parquet")
    return len(tracks), len(windows)


def _license_info(row: TrackRow) -> Any:
    from tunekit.corpus.license import normalize_license

    return normalize_license(row.license_raw)


def write_attribution(rows: list[TrackRow], out: Path) -> int:
    """ATTRIBUTION.md and attribution.csv crediting every kept track whose licence asks for it."""
    from tunekit.corpus.license import attribution_text

    credited = [r for r in rows if r.status == OK and r.requires_attribution]
    lines = [
        "# Attribution",
        "",
        "This dataset contains the following works, used under the licences shown. Each credit",
        "below is required by the work's licence; reproduce this file with anything you distribute",
        "that contains or is derived from these works.",
        "",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "track_id",
            "source_path",
            "title",
            "artist",
            "license",
            "license_raw",
            "license_url",
            "url",
            "source",
            "source_id",
            "share_alike",
            "credit",
        ]
    )
    for r in credited:
        info = _license_info(r)
        credit = attribution_text(info, artist=r.artist, title=r.title, url=r.url, attribution=r.attribution)
        lines.append(f"- {credit}")
        writer.writerow(
            [
                r.track_id,
                r.source_path,
                r.title or "",
                r.artist or "",
                r.license or "",
                r.license_raw or "",
                info.url or "",
                r.url or "",
                r.source or "",
                r.source_id or "",
                "yes" if r.share_alike else "no",
                credit,
            ]
        )
    if not credited:
        lines.append("No work in this dataset requires attribution.")
    write_text(out / "ATTRIBUTION.md", "\n".join(lines) + "\n")
    write_text(out / "attribution.csv", buf.getvalue())
    return len(credited)


def _hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def build_summary(
    rows: list[TrackRow],
    stage_stats: dict[str, dict[str, Any]],
    window_rejects: dict[str, int],
    config: dict[str, Any],
    scan: dict[str, Any],
    wall_s: float,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """summary.json: status, counts, hours, rejects, licences, splits, per-stage time and throughput, config.

    `problems` are the reasons the run failed (a stage that failed for too many rows, no usable
    window); with any, `status` is "failed".
    """
    from tunekit import __version__

    kept = [r for r in rows if r.status == OK]
    status = Counter(r.status for r in rows)
    rejects = Counter(r.reason.split(":", 1)[0] for r in rows if r.status != OK and r.reason)
    by_stage = Counter(r.failed_stage for r in rows if r.status != OK and r.failed_stage)
    undecodable = Counter(r.extension for r in rows if r.reason == "undecodable")
    windows = [w for r in kept for w in r.windows]
    full = sum(1 for w in windows if w.frames and w.duration_s >= (config.get("window", {}).get("seconds") or 0) - 1e-9)

    from tunekit.corpus.license import license_name

    def label(r: TrackRow) -> str:
        return license_name(r.license)

    sa = sorted({label(r) for r in kept if r.share_alike})
    conflicts = [r for r in rows if r.license_conflict]
    splits: dict[str, dict[str, float]] = {}
    for name in ("train", "valid", "test"):
        tr = [r for r in kept if r.split == name]
        ws = [w for r in tr for w in r.windows]
        splits[name] = {"tracks": len(tr), "windows": len(ws), "hours": _hours(sum(w.duration_s for w in ws))}
    summary: dict[str, Any] = {
        "tunekit_version": __version__,
        "status": "failed" if problems else "ok",
        "problems": list(problems or []),
        "counts": {
            "tracks": len(rows),
            "ok": status.get("ok", 0),
            "rejected": status.get("rejected", 0),
            "failed": status.get("failed", 0),
            "windows": len(windows),
            "windows_full": full,
            "windows_partial": len(windows) - full,
            "windows_silent_dropped": sum(r.windows_silent for r in kept),
            "windows_rejected": dict(sorted(window_rejects.items())),
            "other_files_ignored": scan.get("other_files", 0),
        },
        "hours": {
            "input": _hours(sum(r.duration_s or 0.0 for r in rows)),
            "kept": _hours(sum(r.duration_s or 0.0 for r in kept)),
            "windows": _hours(sum(w.duration_s for w in windows)),
        },
        "rejects_by_reason": dict(sorted(rejects.items())),
        "rejects_by_stage": dict(sorted(by_stage.items())),
        "undecodable_by_extension": dict(sorted(undecodable.items())),
        "licenses": {
            "kept": dict(sorted(Counter(label(r) for r in kept).items())),
            "all": dict(sorted(Counter(label(r) for r in rows).items())),
            "policy": config.get("license_policy"),
            "allow_unknown_license": config.get("allow_unknown_license"),
            "prefer": config.get("license_prefer"),
            "conflicts": {
                "tracks": len(conflicts),
                "kept": sum(1 for r in conflicts if r.status == OK),
                "rejected": sum(1 for r in conflicts if r.reason == "license_conflict"),
            },
            "requiring_attribution": sum(1 for r in kept if r.requires_attribution),
            "share_alike": {
                "tracks": sum(1 for r in kept if r.share_alike),
                "licenses": sa,
                "note": (
                    "ShareAlike licences require adaptations of these works to be shared under the same "
                    "licence; check whether what you distribute (audio, models, generations) is an adaptation."
                    if sa
                    else None
                ),
            },
        },
        "splits": splits,
        "stages": stage_stats,
        "wall_s": round(wall_s, 3),
        "metadata_problems": scan.get("metadata_problems", []),
        "config": config,
    }
    return _finite(summary)


def _finite(obj: Any) -> Any:
    """JSON has no infinities: -inf/inf/NaN become None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def write_summary(summary: dict[str, Any], out: Path) -> None:
    """Atomically write summary.json."""
    write_json(out / "summary.json", summary)


def remove_stale_audio(rows: list[TrackRow], out: Path) -> int:
    """Delete prep's own files in <out>/audio that no kept track references (older configs, tracks
    now rejected, writes interrupted by a kill). Files not named like prep's are left alone."""
    audio_dir = out / "audio"
    if not audio_dir.is_dir():
        return 0
    keep = {(out / r.audio_path).resolve() for r in rows if r.status == OK and r.audio_path}
    removed = 0
    for p in audio_dir.iterdir():
        ours = p.name.startswith(("trk_", ".trk_"))
        if ours and p.is_file() and p.resolve() not in keep:
            p.unlink()
            removed += 1
    return removed

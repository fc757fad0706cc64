"""The windows of one prep output that carry a trainer's inputs: what TokenSet (MusicGen) and LatentSet (ACE-Step)
share. Opening `windows.parquet` with the checks that name the fix, the rows that were encoded, the per-track split
check, and split lookups; each dataset adds its own columns and reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError

WINDOW_COLUMNS = ("window_id", "track_id", "split")


class PreparedWindows:
    """`windows.parquet` of a prep output, restricted to the windows whose inputs were encoded.

    Subclasses say which columns hold the inputs (`ENCODED`: the file column, then the frames column; both
    required), which other columns they read when present (`OPTIONAL`) and how to name what is missing
    (`INPUTS`, the thing the windows lack; `PIPELINE`, the prep pipeline that makes it).
    """

    ENCODED: tuple[str, ...] = ()
    REQUIRED: tuple[str, ...] = ()  # further required columns beside WINDOW_COLUMNS and ENCODED
    OPTIONAL: tuple[str, ...] = ()
    INPUTS = "encoded windows"
    PIPELINE = ""  # e.g. "pipeline=musicgen"

    def __init__(self, root: str | Path, key: str = "data.path") -> None:
        import pyarrow.parquet as pq

        self.root = Path(root).expanduser()
        self.key = key
        windows = self.root / "windows.parquet"
        if not self.root.is_dir():
            raise self.error(f"{key}={self.root} is not a folder; point it at the output of `tunekit prep`")
        if not windows.is_file():
            raise self.error(f"{key}={self.root} has no windows.parquet; run `tunekit prep` ({self.PIPELINE}) first "
                             "and pass its out= folder")
        names = set(pq.read_schema(windows).names)
        missing = [c for c in WINDOW_COLUMNS if c not in names]
        if missing:
            raise self.error(f"{windows} lacks the columns {missing}; re-run `tunekit prep` into a new out=")
        missing = [c for c in dict.fromkeys((*self.ENCODED, *self.REQUIRED)) if c not in names]
        if missing:
            raise self.error(f"{windows} has no {self.INPUTS} (missing {', '.join(missing)}): run `tunekit prep` "
                             f"({self.PIPELINE}) into a new out= first")
        self._check_columns(windows, names)
        columns = [c for c in dict.fromkeys((*WINDOW_COLUMNS, *self.ENCODED, *self.REQUIRED, *self.OPTIONAL))
                   if c in names]
        table = pq.read_table(windows, columns=columns).to_pydict()
        file_column, frames_column = self.ENCODED[:2]
        keep = [i for i, f in enumerate(table[file_column]) if f and (table[frames_column][i] or 0) > 0]
        self.n_unencoded = len(table["window_id"]) - len(keep)
        if not keep:
            raise self.error(f"{windows} has no {self.INPUTS}; run `tunekit prep` ({self.PIPELINE}) first")
        self._table = {name: [values[i] for i in keep] for name, values in table.items()}
        self.window_id = np.asarray(self.col("window_id"), dtype=object)
        self.track_id = np.asarray(self.col("track_id"), dtype=object)
        self.split = np.asarray([s or "" for s in self.col("split")], dtype=object)
        self.audio_path = self.col("audio_path")
        self.offset_s = self.col("offset_s")
        self.license = self.col("license")

    def error(self, message: str) -> ConfigError:
        """A data problem, naming the key that points at the prep output."""
        return ConfigError(message, key=self.key)

    def _check_columns(self, windows: Path, names: set[str]) -> None:
        """Further checks of the columns a subclass needs (before the table is read)."""

    def col(self, name: str) -> list[Any]:
        """A column's values for the encoded windows (None each when the column is absent), until `done_reading`."""
        return self._table[name] if name in self._table else [None] * len(self._table["window_id"])

    def done_reading(self) -> None:
        """Drop the table read at opening once a subclass has taken its columns (DataLoader workers get a copy
        of the dataset: it should hold only what reads need)."""
        del self._table

    def check_splits(self) -> None:
        """Splits are per track: a track must never appear in two splits (leakage into validation), and the windows
        must agree with tracks.parquet."""
        by_track: dict[str, set[str]] = {}
        for t, s in zip(self.track_id, self.split):
            by_track.setdefault(t, set()).add(s)
        leaked = sorted(t for t, s in by_track.items() if len(s) > 1)
        if leaked:
            raise self.error(f"{self.root}/windows.parquet puts windows of one track in several splits "
                             f"({', '.join(leaked[:3])}{'…' if len(leaked) > 3 else ''}); splits must be per track: "
                             "re-run `tunekit prep`")
        tracks = self.root / "tracks.parquet"
        if tracks.is_file():
            import pyarrow.parquet as pq

            if {"track_id", "split"} <= set(pq.read_schema(tracks).names):
                t = pq.read_table(tracks, columns=["track_id", "split"]).to_pydict()
                track_split = dict(zip(t["track_id"], t["split"]))
                wrong = sorted(tid for tid, s in by_track.items() if tid in track_split and track_split[tid] not in s)
                if wrong:
                    raise self.error(f"windows.parquet and tracks.parquet in {self.root} disagree on the split of "
                                     f"{wrong[0]} (and {len(wrong) - 1} more); re-run `tunekit prep`")

    def __len__(self) -> int:
        return len(self.window_id)

    def summary(self) -> dict[str, Any]:
        """Prep's summary.json (counts, licences, splits, config) when present, else {}."""
        try:
            return json.loads((self.root / "summary.json").read_text())
        except (OSError, ValueError):
            return {}

    def pipeline(self) -> str | None:
        """The prep pipeline that made this data (summary.json's config.pipeline_name), if recorded."""
        summary = self.summary()
        config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
        return summary.get("pipeline") or config.get("pipeline_name")

    def indices(self, split: str) -> np.ndarray:
        """Row indices of the windows in `split`, in window_id order (a stable order for seeding)."""
        rows = np.flatnonzero(self.split == split)
        return rows[np.argsort(self.window_id[rows], kind="stable")]

    def tracks(self, split: str) -> set[str]:
        """The track ids in `split`."""
        return set(self.track_id[self.split == split])

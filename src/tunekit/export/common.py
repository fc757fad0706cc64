"""What every export shares: reading a prep output, cutting a window's audio, the audiocraft text
fields, and carrying attribution and licences along."""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError

WINDOW_REQUIRED = ("window_id", "track_id", "audio_path", "offset_s", "duration_s", "split")
ATTRIBUTION_FILES = ("ATTRIBUTION.md", "attribution.csv")
LICENSES_DIR = "LICENSES"
SPLIT_ORDER = ("train", "valid", "test")


@dataclass
class PrepData:
    """The windows to export (dicts joined with their track's provenance) and where they come from."""

    root: Path  # the prep output folder
    windows: list[dict[str, Any]]  # windows.parquet rows, sorted by split, track and offset
    tracks: dict[str, dict[str, Any]] = field(default_factory=dict)  # tracks.parquet rows by track_id

    @property
    def splits(self) -> list[str]:
        """Splits present, in train, valid, test order."""
        present = {w["split"] for w in self.windows}
        return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


def load_prep_output(data: str | Path, split: str | None = None) -> PrepData:
    """Read `windows.parquet` and `tracks.parquet` of a prep output; keep `split` only when given."""
    import pyarrow.parquet as pq

    root = Path(data).expanduser().resolve()
    windows_file, tracks_file = root / "windows.parquet", root / "tracks.parquet"
    for f in (windows_file, tracks_file):
        if not f.is_file():
            raise ConfigError(f"data={data} is not a prep output: {f.name} is missing (run `tunekit prep` first)",
                              key="data")
    windows = pq.read_table(windows_file).to_pylist()
    if windows:
        missing = [c for c in WINDOW_REQUIRED if c not in windows[0]]
        if missing:
            raise ConfigError(f"{windows_file} lacks the column(s) {', '.join(missing)}; "
                              "re-run `tunekit prep` with this tunekit version", key="data")
    tracks = {t["track_id"]: t for t in pq.read_table(tracks_file).to_pylist()}
    if split is not None:
        windows = [w for w in windows if w["split"] == split]
    order = {s: i for i, s in enumerate(SPLIT_ORDER)}
    windows.sort(key=lambda w: (order.get(w["split"], len(order)), str(w["split"]), w["track_id"],
                                float(w["offset_s"]), w["window_id"]))
    return PrepData(root, windows, tracks)


def window_audio(data: PrepData, window: dict[str, Any]) -> tuple[np.ndarray, int]:
    """The window's audio (C, N) float32 cut from its track's normalised file, and the rate."""
    from tunekit.audio.io import audio_info, read_audio

    path = data.root / window["audio_path"]
    if not path.is_file():
        raise ConfigError(f"audio file {path} of window {window['window_id']} is missing; re-run `tunekit prep`",
                          key="data")
    start, frames = window.get("offset_frames"), window.get("frames")
    if start is None or frames is None:
        rate = int(audio_info(path).samplerate)
        start, frames = round(float(window["offset_s"]) * rate), round(float(window["duration_s"]) * rate)
    audio, rate = read_audio(path, start=int(start), frames=int(frames))
    return audio, rate


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if isinstance(v, str) and v.strip()]


def music_info(window: dict[str, Any], track: dict[str, Any] | None) -> dict[str, Any]:
    """audiocraft's MusicInfo fields for one window, with the types its loader expects.

    Every field audiocraft requires is present: strings ("" when unknown, which audiocraft reads
    as None), `moods`/`keywords` lists, `instrument` a comma-joined string (a list would be
    dropped), `bpm` a number or null. `description` is the window's caption.
    """
    track = track or {}
    instrument = window.get("instrument")
    if not isinstance(instrument, str):
        instrument = ", ".join(_strings(instrument if instrument is not None else window.get("instruments")))
    genre = _text(window.get("genre"))
    if not genre:
        genres = _strings(window.get("genres"))
        genre = genres[0] if genres else _text(track.get("genre"))
    bpm = window.get("bpm")
    return {
        "title": _text(track.get("title")),
        "artist": _text(track.get("artist")),
        "key": _text(window.get("key")),
        "bpm": float(bpm) if isinstance(bpm, (int, float)) and np.isfinite(bpm) else None,
        "genre": genre.strip(),
        "moods": _strings(window.get("moods")),
        "keywords": _strings(window.get("keywords")),
        "description": _text(window.get("description")) or _text(window.get("caption")),
        "name": str(window["window_id"]),
        "instrument": instrument.strip(),
    }


def copy_attribution(data: PrepData, out: Path) -> list[str]:
    """Copy ATTRIBUTION.md, attribution.csv (and LICENSES/ when present) into the export; names copied.

    An export without its attribution could breach the licences of the works in it, so a prep
    output missing these files is an error.
    """
    from tunekit.atomic import write_bytes

    copied = []
    for name in ATTRIBUTION_FILES:
        src = data.root / name
        if not src.is_file():
            raise ConfigError(f"data={data.root} has no {name}: the export must carry the attribution the works' "
                              "licences require; re-run `tunekit prep` to write it", key="data")
        write_bytes(out / name, src.read_bytes())
        copied.append(name)
    licenses = data.root / LICENSES_DIR
    if licenses.is_dir():
        target = out / LICENSES_DIR
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(licenses, target)
        copied.append(LICENSES_DIR + "/")
    return copied


def licence_table(data: PrepData) -> list[dict[str, Any]]:
    """One row per licence among the exported windows: label, URL, terms, track and window counts."""
    from tunekit.corpus.license import normalize_license

    windows_by: Counter[str] = Counter()
    tracks_by: dict[str, set[str]] = {}
    infos: dict[str, Any] = {}
    for w in data.windows:
        track = data.tracks.get(w["track_id"], {})
        raw = track.get("license_raw") or w.get("license") or track.get("license")
        info = normalize_license(raw)
        label = info.label
        infos.setdefault(label, info)
        windows_by[label] += 1
        tracks_by.setdefault(label, set()).add(w["track_id"])
    rows = []
    for label in sorted(windows_by):
        info = infos[label]
        rows.append({
            "license": label, "spdx": info.spdx or "", "url": info.url or "",
            "attribution": info.requires_attribution, "share_alike": info.share_alike,
            "non_commercial": info.non_commercial, "tracks": len(tracks_by[label]), "windows": windows_by[label],
        })
    return rows


def split_counts(data: PrepData) -> list[dict[str, Any]]:
    """Windows, tracks and hours per split."""
    out = []
    for split in data.splits:
        ws = [w for w in data.windows if w["split"] == split]
        out.append({"split": split, "windows": len(ws), "tracks": len({w["track_id"] for w in ws}),
                    "hours": round(sum(float(w["duration_s"]) for w in ws) / 3600.0, 4)})
    return out


def readme(title: str, data: PrepData, usage: str, front_matter: str = "") -> str:
    """The export's README: what it holds, the licences present and what they require, how to use it."""
    lines = [front_matter] if front_matter else []
    lines += [f"# {title}", "", f"Exported by tunekit from the prep output `{data.root.name}`.", "",
              "| split | windows | tracks | hours |", "|---|---:|---:|---:|"]
    for c in split_counts(data):
        lines.append(f"| {c['split']} | {c['windows']} | {c['tracks']} | {c['hours']} |")
    lines += ["", "## Licences", "",
              "Every work keeps its own licence. Reproduce `ATTRIBUTION.md` (or `attribution.csv`) with anything",
              "you distribute that contains or is derived from these works.", "",
              "| licence | tracks | windows | attribution | share-alike | non-commercial | URL |",
              "|---|---:|---:|---|---|---|---|"]
    for r in licence_table(data):
        yes = {True: "yes", False: "no"}
        lines.append(f"| {r['license']} | {r['tracks']} | {r['windows']} | {yes[r['attribution']]} | "
                     f"{yes[r['share_alike']]} | {yes[r['non_commercial']]} | {r['url']} |")
    table = licence_table(data)
    if any(r["share_alike"] for r in table):
        lines += ["", "ShareAlike works: adaptations of them must be shared under the same licence."]
    if any(r["non_commercial"] for r in table):
        lines += ["", "NonCommercial works: neither they nor adaptations may be used commercially."]
    lines += ["", "## Usage", "", usage.strip(), ""]
    return "\n".join(lines)


def prepare_out(out: str | Path, overwrite: bool, owned: list[str]) -> Path:
    """The export folder, empty or a previous export (whose `owned` entries are removed) when `overwrite`."""
    path = Path(out).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out={out} is a file; choose a folder for the export", key="out")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(f"out={out} is not empty; choose a new folder or set overwrite=true to replace "
                              "the export in it", key="out")
        if (path / "export.json").is_file():
            for name in owned:
                target = path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path

"""audiocraft export: `<split>/data.jsonl` manifests, one audio file per window and its `.json` sidecar.

audiocraft crops random segments from whole files, so each window becomes its own file: the crop
then always matches that window's caption. A manifest row holds audiocraft's AudioMeta fields
(`path, duration, sample_rate, amplitude, weight, info_path`); the sidecar beside the audio holds
the MusicInfo fields its MusicDataset reads (`title, artist, key, bpm, genre, moods, description,
name, instrument`, plus `keywords`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunekit.export.common import PrepData, music_info, window_audio

AUDIO_DIR = "audio"


def manifest_path(audio: Path, relative_to: str | None) -> str:
    """The path written into data.jsonl: absolute, or relative to the folder audiocraft runs from."""
    if relative_to is None:
        return str(audio.resolve())
    return os.path.relpath(audio.resolve(), Path(relative_to).expanduser().resolve())


def export_audiocraft(data: PrepData, out: Path, *, audio_format: str = "flac",
                      relative_to: str | None = None) -> dict[str, Any]:
    """Write the audiocraft dataset into `out`; returns counts per split."""
    from tunekit.atomic import write_json, write_text
    from tunekit.audio.io import write_audio

    lines: dict[str, list[str]] = {s: [] for s in data.splits}
    uncaptioned = 0
    for w in data.windows:
        audio, rate = window_audio(data, w)
        split = w["split"]
        file = out / AUDIO_DIR / split / f"{w['window_id']}.{audio_format}"
        write_audio(file, audio, rate, subtype="PCM_24")
        info = music_info(w, data.tracks.get(w["track_id"]))
        if not info["description"]:
            uncaptioned += 1
        sidecar = {**info, "track_id": w["track_id"], "window_id": w["window_id"], "license": w.get("license"),
                   "captions": list(w.get("captions") or [])}
        write_json(file.with_suffix(".json"), sidecar)
        meta = {
            "path": manifest_path(file, relative_to),
            "duration": audio.shape[1] / rate,
            "sample_rate": rate,
            "amplitude": float(abs(audio).max()) if audio.size else 0.0,
            "weight": None,
            "info_path": None,
        }
        lines[split].append(json.dumps(meta))
    for split, rows in lines.items():
        write_text(out / split / "data.jsonl", "".join(r + "\n" for r in rows))
    return {"windows_per_split": {s: len(v) for s, v in lines.items()}, "uncaptioned": uncaptioned}


def usage(out: Path, splits: list[str], rate: int, channels: int) -> str:
    """How to point audiocraft at this export."""
    names = {"train": "train", "valid": "valid", "test": "evaluate"}
    sources = "\n".join(f"  {names.get(s, s)}: {out / s}" for s in splits)
    return (
        "audiocraft reads `<split>/data.jsonl` and finds each window's `.json` sidecar next to its audio.\n"
        "A dataset config (`config/dset/audio/<name>.yaml` in an audiocraft checkout):\n\n"
        "```yaml\n# @package __global__\ndatasource:\n"
        f"  max_sample_rate: {rate}\n  max_channels: {channels}\n{sources}\n"
        "```\n\nThen train with `dset=audio/<name>` and `dataset.segment_duration` at most the window length."
    )

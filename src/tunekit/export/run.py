"""`tunekit export`: write a prep output as an audiocraft or Hugging Face dataset."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.export.config import ExportConfig, as_export_config

log = logging.getLogger("tunekit.export")

# Entries of `out` an export writes; a previous export's are removed before a new one (overwrite=true).
_OWNED = ["audio", "data", "train", "valid", "test", "README.md", "export.json", "ATTRIBUTION.md",
          "attribution.csv", "LICENSES"]


def run_export(cfg: Any) -> int:
    """Run `tunekit export` with a composed config (DictConfig or ExportConfig); returns the exit code (0)."""
    from tunekit import __version__
    from tunekit.atomic import write_json, write_text
    from tunekit.audio.io import audio_info
    from tunekit.export import audiocraft, hf
    from tunekit.export.common import copy_attribution, load_prep_output, prepare_out, readme

    started = time.perf_counter()
    ec = as_export_config(cfg)
    problems = ExportConfig.problems(ec)
    if ec.data is None:
        problems.append("missing value for 'data' (set it with data=<prep output folder>)")
    if ec.out is None:
        problems.append("missing value for 'out' (set it with out=<export folder>)")
    if problems:
        raise ConfigErrors(problems)
    data = load_prep_output(ec.data, ec.split)  # type: ignore[arg-type]
    if not data.windows:
        which = f" in split {ec.split!r}" if ec.split else ""
        raise ConfigError(f"data={ec.data} has no windows{which} to export", key="split" if ec.split else "data")
    target = Path(ec.out).expanduser().resolve()  # type: ignore[arg-type]
    if target == data.root or data.root in target.parents or target in data.root.parents:
        raise ConfigError(f"out={ec.out} and data={ec.data} overlap; write the export to a separate folder", key="out")
    out = prepare_out(target, ec.overwrite, _OWNED)

    copied = copy_attribution(data, out)
    if ec.format == "audiocraft":
        result = audiocraft.export_audiocraft(data, out, audio_format=ec.audio_format, relative_to=ec.relative_to)
        info = audio_info(data.root / data.windows[0]["audio_path"])
        usage = audiocraft.usage(out, data.splits, int(info.samplerate), int(info.channels))
        text = readme("tunekit export (audiocraft)", data, usage)
    else:
        result = hf.export_hf(data, out, audio_format=ec.audio_format, shard_mb=ec.shard_mb)
        text = readme("tunekit export (Hugging Face datasets)", data, hf.usage(out, data.splits),
                      front_matter=hf.front_matter(data.splits))
    write_text(out / "README.md", text)
    manifest = {
        "tunekit_version": __version__, "format": ec.format, "data": str(data.root), "split": ec.split,
        "windows": len(data.windows), "tracks": len({w["track_id"] for w in data.windows}),
        "attribution": copied, **result, "wall_s": round(time.perf_counter() - started, 3),
    }
    write_json(out / "export.json", manifest)
    uncaptioned = result.get("uncaptioned", sum(1 for w in data.windows if not (w.get("caption") or "").strip()))
    if uncaptioned:
        log.warning("%d of %d windows have no caption: run prep with the caption stage to give them one",
                    uncaptioned, len(data.windows))
    print(f"exported {len(data.windows)} windows ({', '.join(data.splits)}) as {ec.format} to {out}")
    return 0

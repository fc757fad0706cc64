"""Hugging Face export: `data/<split>-NNNNN-of-NNNNN.parquet` shards with a `datasets` Audio column.

The audio column is a struct `{bytes: binary, path: string}` holding each window as a FLAC/WAV
file, and the Arrow schema carries the `datasets` feature types under the `huggingface` metadata
key, so `datasets.load_dataset("parquet", data_files=...)` (or the Hub) decodes it as Audio. The
layout and README front matter follow the Hub's conventions, so the folder can be pushed as is.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from tunekit.export.common import PrepData, music_info, window_audio

DATA_DIR = "data"
_ROWS_PER_GROUP = 32

# (column, kind) in output order; kind is string | float64 | int64 | list<string> | audio.
COLUMNS: list[tuple[str, str]] = [
    ("audio", "audio"), ("window_id", "string"), ("track_id", "string"), ("split", "string"),
    ("caption", "string"), ("captions", "list<string>"), ("description", "string"),
    ("genre", "string"), ("genres", "list<string>"), ("moods", "list<string>"), ("keywords", "list<string>"),
    ("instrument", "string"), ("instruments", "list<string>"), ("bpm", "float64"), ("key", "string"),
    ("duration_s", "float64"), ("start_s", "float64"), ("sample_rate", "int64"),
    ("license", "string"), ("title", "string"), ("artist", "string"), ("attribution", "string"),
    ("source", "string"), ("source_id", "string"), ("url", "string"),
]


def arrow_type(kind: str) -> Any:
    """The Arrow type `datasets` uses for a column kind (Audio: struct<bytes: binary, path: string>)."""
    import pyarrow as pa

    if kind == "audio":
        return pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    if kind == "list<string>":
        return pa.list_(pa.string())
    return {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}[kind]


def feature(kind: str, sampling_rate: int | None) -> dict[str, Any]:
    """The `datasets` feature of a column kind, as `Features.to_dict()` writes it."""
    if kind == "audio":
        return {"sampling_rate": sampling_rate, "_type": "Audio"}
    if kind == "list<string>":
        return {"feature": {"dtype": "string", "_type": "Value"}, "length": -1, "_type": "Sequence"}
    return {"dtype": kind, "_type": "Value"}


def schema(sampling_rate: int | None) -> Any:
    """The shards' Arrow schema, with the `datasets` features in its `huggingface` metadata."""
    import pyarrow as pa

    features = {name: feature(kind, sampling_rate) for name, kind in COLUMNS}
    meta = {"info": {"features": features}}
    return pa.schema([pa.field(n, arrow_type(k)) for n, k in COLUMNS],
                     metadata={"huggingface": json.dumps(meta)})


def _encode(audio: Any, rate: int, audio_format: str) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.T, rate, format=audio_format.upper(), subtype="PCM_24")
    return buf.getvalue()


def _record(data: PrepData, w: dict[str, Any], audio_format: str) -> tuple[dict[str, Any], int]:
    audio, rate = window_audio(data, w)
    track = data.tracks.get(w["track_id"]) or {}
    info = music_info(w, track)
    blob = _encode(audio, rate, audio_format)
    rec = {
        "audio": {"bytes": blob, "path": f"{w['window_id']}.{audio_format}"},
        "window_id": w["window_id"], "track_id": w["track_id"], "split": w["split"],
        "caption": w.get("caption") or info["description"], "captions": list(w.get("captions") or []),
        "description": info["description"], "genre": info["genre"], "genres": list(w.get("genres") or []),
        "moods": info["moods"], "keywords": info["keywords"], "instrument": info["instrument"],
        "instruments": list(w.get("instruments") or []), "bpm": info["bpm"], "key": w.get("key"),
        "duration_s": audio.shape[1] / rate, "start_s": w.get("start_s"), "sample_rate": rate,
        "license": w.get("license") or track.get("license"),
        **{k: track.get(k) for k in ("title", "artist", "attribution", "source", "source_id", "url")},
    }
    return rec, len(blob)


def export_hf(data: PrepData, out: Path, *, audio_format: str = "flac", shard_mb: float = 500.0) -> dict[str, Any]:
    """Write the Parquet shards into `out/data/`; returns the shard files per split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rates = {w.get("sample_rate") for w in data.windows}
    sampling_rate = int(next(iter(rates))) if len(rates) == 1 and None not in rates else None
    sch = schema(sampling_rate)
    folder = out / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    limit = int(shard_mb * 1_000_000)
    shards: dict[str, list[str]] = {}
    for split in data.splits:
        temps: list[Path] = []
        writer = None
        shard_bytes = 0
        buffer: list[dict[str, Any]] = []

        def flush() -> None:
            if buffer and writer is not None:
                writer.write_table(pa.Table.from_pylist(buffer, schema=sch))
                buffer.clear()

        for w in (w for w in data.windows if w["split"] == split):
            if writer is None or shard_bytes >= limit:
                flush()
                if writer is not None:
                    writer.close()
                temps.append(folder / f".{split}-{len(temps):05d}.tmp.parquet")
                writer = pq.ParquetWriter(str(temps[-1]), sch, compression="zstd")
                shard_bytes = 0
            rec, size = _record(data, w, audio_format)
            buffer.append(rec)
            shard_bytes += size
            if len(buffer) >= _ROWS_PER_GROUP:
                flush()
        flush()
        if writer is not None:
            writer.close()
        names = []
        for i, tmp in enumerate(temps):
            name = f"{split}-{i:05d}-of-{len(temps):05d}.parquet"
            os.replace(tmp, folder / name)
            names.append(f"{DATA_DIR}/{name}")
        shards[split] = names
    return {"shards": shards}


def front_matter(splits: list[str]) -> str:
    """Hub dataset-card YAML: one config whose splits are the shard patterns."""
    lines = ["---", "license: other", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: {DATA_DIR}/{split}-*"]
    lines.append("---")
    return "\n".join(lines)


def usage(out: Path, splits: list[str]) -> str:
    """How to load this export with `datasets`."""
    files = ", ".join(f'"{s}": "{out / DATA_DIR}/{s}-*.parquet"' for s in splits)
    return (
        "```python\nfrom datasets import Audio, load_dataset\n\n"
        f'ds = load_dataset("parquet", data_files={{{files}}})\n'
        f'# or: ds = load_dataset("{out}")  (the README front matter declares the splits)\n'
        'ds["train"][0]["audio"]  # decoded audio and sampling rate (datasets >= 4 decodes with torchcodec)\n'
        'raw = ds.cast_column("audio", Audio(decode=False))  # the FLAC bytes, without a decoder\n```\n\n'
        "Or push the folder to the Hub as a dataset repository."
    )

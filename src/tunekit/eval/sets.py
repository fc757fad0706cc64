"""The audio sets an evaluation scores: a folder of audio files, or the held-out windows of a prep output.

Every clip has an id that pairs it with its prompt: in a folder, the file's path relative to the
folder without its extension (`rock/a.wav` → `rock/a`); in a prep output, the `window_id`. Pairs are
always made by id, never by listing order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tunekit.audio.io import AUDIO_EXTENSIONS, audio_info, read_audio
from tunekit.errors import ConfigError
from tunekit.file_digest import file_sha256_memo

PREP_WINDOWS = "windows.parquet"
_ID_KEYS = ("id", "file", "filename", "file_name", "path", "window_id", "name")
_PROMPT_KEYS = ("prompt", "caption", "text", "description")


@dataclass(frozen=True)
class AudioItem:
    """One clip: a whole file, or `duration_s` seconds from `offset_s` inside it."""

    id: str
    path: Path
    offset_s: float = 0.0
    duration_s: float | None = None
    prompt: str | None = None

    def load(self) -> tuple[np.ndarray, int]:
        """(channels, samples) float32 audio and its rate."""
        if self.offset_s == 0.0 and self.duration_s is None:
            return read_audio(self.path)
        rate = int(audio_info(self.path).samplerate)
        start = int(round(self.offset_s * rate))
        frames = -1 if self.duration_s is None else int(round(self.duration_s * rate))
        return read_audio(self.path, start=start, frames=frames)


@dataclass
class AudioSet:
    """Clips to score, with where they came from (`kind`: folder | prep)."""

    name: str
    root: Path
    kind: str
    items: list[AudioItem]
    splits: tuple[str, ...] = ()
    _hash: str | None = field(default=None, repr=False)

    def seconds(self) -> list[float]:
        """Each clip's length in seconds (from the file header for whole files)."""
        out = []
        for item in self.items:
            if item.duration_s is not None:
                out.append(float(item.duration_s))
            else:
                info = audio_info(item.path)
                out.append(info.frames / info.samplerate)
        return out

    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def prompts(self) -> dict[str, str]:
        """id → prompt for the clips that have one."""
        return {item.id: item.prompt for item in self.items if item.prompt}

    def content_hash(self) -> str:
        """sha256 over each clip's id, extent and its file's bytes: equal sets share cached statistics."""
        if self._hash is None:
            digests: dict[Path, str] = {}
            total = hashlib.sha256()
            for item in sorted(self.items, key=lambda i: i.id):
                if item.path not in digests:
                    digests[item.path] = file_sha256_memo(item.path)
                total.update(f"{item.id}\0{item.offset_s!r}\0{item.duration_s!r}\0{digests[item.path]}\n".encode())
            self._hash = total.hexdigest()
        return self._hash


def clip_id(path: Path, root: Path) -> str:
    """The id of an audio file in a folder: its relative POSIX path without the extension."""
    return path.relative_to(root).with_suffix("").as_posix()


def folder_set(root: str | os.PathLike[str], *, name: str, key: str) -> AudioSet:
    """Every audio file under `root` (recursively), sorted by id. `key` names the config key in errors."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"{key}={root}: not a folder of audio files", key=key)
    items: dict[str, AudioItem] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        cid = clip_id(path, root)
        if cid in items:
            raise ConfigError(
                f"{key}={root}: two files share the id {cid!r} ({items[cid].path.name}, {path.name}); "
                "ids are file paths without extension: rename one",
                key=key,
            )
        items[cid] = AudioItem(id=cid, path=path)
    if not items:
        raise ConfigError(f"{key}={root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found", key=key)
    return AudioSet(name=name, root=root, kind="folder", items=list(items.values()))


def prep_set(root: str | os.PathLike[str], *, splits: Iterable[str], name: str, key: str) -> AudioSet:
    """The windows of a prep output (`windows.parquet`) whose `split` is in `splits`, with their captions."""
    import pyarrow.parquet as pq

    root = Path(root).expanduser()
    table = pq.read_table(root / PREP_WINDOWS)
    columns = set(table.column_names)
    needed = {"window_id", "audio_path", "offset_s", "duration_s", "split"}
    if missing := sorted(needed - columns):
        raise ConfigError(f"{key}={root}: {PREP_WINDOWS} lacks columns {missing}; re-run `tunekit prep`", key=key)
    rows = table.to_pylist()
    splits = tuple(splits)
    chosen = [r for r in rows if r["split"] in splits]
    if not chosen:
        found = sorted({str(r["split"]) for r in rows})
        raise ConfigError(
            f"{key}={root}: no windows in split(s) {list(splits)} (splits present: {found}); "
            "set reference_splits to one of them",
            key="reference_splits",
        )
    items = [
        AudioItem(
            id=str(r["window_id"]),
            path=root / r["audio_path"],
            offset_s=float(r["offset_s"]),
            duration_s=float(r["duration_s"]),
            prompt=(r.get("caption") or None),
        )
        for r in sorted(chosen, key=lambda r: str(r["window_id"]))
    ]
    for item in items:
        if not item.path.is_file():
            raise ConfigError(f"{key}={root}: window {item.id} points at a missing file {item.path}", key=key)
    return AudioSet(name=name, root=root, kind="prep", items=items, splits=splits)


def load_set(path: str | os.PathLike[str], *, name: str, key: str, splits: Iterable[str] = ("test",)) -> AudioSet:
    """A prep output (has windows.parquet) or a folder of audio files."""
    p = Path(path).expanduser()
    if (p / PREP_WINDOWS).is_file():
        return prep_set(p, splits=splits, name=name, key=key)
    return folder_set(p, name=name, key=key)


def _normalise_id(raw: str) -> str:
    text = str(raw).strip().replace("\\", "/")
    if Path(text).suffix.lower() in AUDIO_EXTENSIONS:
        text = text[: -len(Path(text).suffix)]
    return text[2:] if text.startswith("./") else text


def _pick(row: dict, keys: tuple[str, ...]) -> str | None:
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    for k in keys:
        if k in lowered and lowered[k] not in (None, ""):
            return str(lowered[k])
    return None


def load_prompts(path: str | os.PathLike[str], *, key: str = "prompts") -> dict[str, str]:
    """id → prompt from a CSV (header with an id and a prompt column) or JSONL file, or a JSON object.

    Id columns: id, file, filename, path, window_id, name; prompt columns: prompt, caption, text,
    description. File extensions in ids are dropped, so `a.wav` and `a` name the same clip.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}={p}: file not found", key=key)
    rows: list[dict] = []
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{key}={p}: line {n} is not JSON ({exc.msg})", key=key) from exc
    elif p.suffix.lower() == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))
        rows = [{"id": k, "prompt": v} for k, v in data.items()] if isinstance(data, dict) else list(data)
    else:
        raise ConfigError(f"{key}={p}: use a .csv, .jsonl or .json file mapping clip ids to prompts", key=key)
    prompts: dict[str, str] = {}
    for n, row in enumerate(rows, 1):
        cid, prompt = _pick(row, _ID_KEYS), _pick(row, _PROMPT_KEYS)
        if cid is None or prompt is None:
            raise ConfigError(
                f"{key}={p}: row {n} needs an id column ({'/'.join(_ID_KEYS)}) and a prompt column "
                f"({'/'.join(_PROMPT_KEYS)}); got keys {sorted(row)}",
                key=key,
            )
        cid = _normalise_id(cid)
        if cid in prompts and prompts[cid] != prompt:
            raise ConfigError(f"{key}={p}: id {cid!r} has two different prompts", key=key)
        prompts[cid] = prompt
    return prompts


def attach_prompts(audio_set: AudioSet, prompts: dict[str, str]) -> tuple[AudioSet, list[str]]:
    """The set with each clip's prompt looked up by its exact id; also returns the ids left without one."""
    items, missing = [], []
    for item in audio_set.items:
        prompt = prompts.get(item.id)
        if prompt is None:
            missing.append(item.id)
        items.append(AudioItem(item.id, item.path, item.offset_s, item.duration_s, prompt))
    return AudioSet(audio_set.name, audio_set.root, audio_set.kind, items, audio_set.splits), missing

"""Hugging Face datasets as a prep corpus: every row becomes a track with the provenance of a file.

`corpus=` may name a local dataset (a folder of Parquet shards such as `data/train-*.parquet`, or a
`Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder) or `hf://org/name[@revision]`, which
`huggingface_hub.snapshot_download` fetches into its cache (offline: answered from the cache). Shards are
streamed with pyarrow, one Parquet row group or Arrow record batch at a time, so memory does not grow with
the dataset. Each row's audio (an `Audio` cell's bytes or path, a binary or a path column) is written once
into the prep cache, named by its sha256 (atomically: a killed run resumes, a re-run writes nothing), and a
link `<split>/<row:08d>.<ext>` to it in a per-dataset folder becomes the row's file: the ingest, licence
and decode stages then treat it like any other file. Audio is decoded by the stages with soundfile (or
ffmpeg for AAC/M4A), never by `datasets`.

Columns are mapped by `source.columns.*` (null: detected by name). Each track records the dataset
(`hf_dataset`), its revision (`hf_revision`: the Hub commit, a `save_to_disk` fingerprint or a git
checkout's commit), the split (`hf_split`), the row's index in its split (`hf_row`) and own id
(`hf_row_id`) and the shard it came from (`hf_shard`). A row without audio is a rejected track
(`no_audio`, `empty` or `unreadable`) with the reason; the dataset card's licence is used for rows without
one only when `source.license_from_card=true`, and recorded as `license_source=hf_card`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.corpus.metadata import text_value
from tunekit.errors import ConfigError, ConfigErrors

HUB_SCHEME = "hf://"
BATCH_ROWS = 32  # rows converted to Python at a time (pyarrow holds one row group at a time)

# Column names tried for each field, in order (compared case-insensitively).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "audio": ("audio", "audio_file", "file", "path", "file_name", "filename", "wav", "flac", "mp3"),
    "id": ("id", "row_id", "uid", "_id", "window_id"),
    "license": ("license", "licence", "license_url", "licence_url", "license_name", "license_title", "license_id"),
    "attribution": ("attribution", "credit", "credits"),
    "artist": ("artist", "artist_name", "artists", "author", "creator", "username", "performer"),
    "title": ("title", "track_title", "song", "song_title", "name"),
    "source": ("source",),
    "source_id": ("source_id", "original_id", "track_id"),
    "url": ("url", "link", "page", "source_url", "track_url", "webpage"),
    "lyrics": ("lyrics", "lyric", "lrc"),
    "language": ("language", "lang"),
    "genre": ("genre",),
    "instrumental": ("instrumental", "is_instrumental"),
    "split": ("split",),
}
# datasets' split keywords (a file or folder name starting with one names its split).
SPLIT_WORDS = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test", "evaluation": "test",
}  # fmt: skip
_SPLIT_RE = re.compile(r"^(" + "|".join(sorted(SPLIT_WORDS, key=len, reverse=True)) + r")(?=$|[-._ 0-9])", re.I)
_HUB_CACHE_RE = re.compile(r"^datasets--(.+)$")
_TRUE = frozenset({"true", "yes", "y", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "f"})


# -- hf://org/name[@revision] --------------------------------------------------------------------------


def is_hub_spec(corpus: str | None) -> bool:
    """Whether `corpus` names a Hub dataset (`hf://org/name[@revision]`)."""
    return bool(corpus) and str(corpus).startswith(HUB_SCHEME)


def parse_hub_spec(corpus: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of `hf://[datasets/]org/name[@revision]`; ConfigError naming `corpus`."""
    text = corpus[len(HUB_SCHEME) :].strip().strip("/")
    if text.startswith("datasets/"):
        text = text[len("datasets/") :]
    repo, _, revision = text.partition("@")
    parts = repo.split("/")
    if not repo or len(parts) > 2 or not all(re.fullmatch(r"[\w.-]+", p) for p in parts):
        raise ConfigError(
            f"corpus={corpus} is not a Hub dataset name; write corpus=hf://org/name or hf://org/name@revision",
            key="corpus",
        )
    return repo, (revision or None)


def resolve_corpus(corpus: str) -> Path:
    """The local folder of `corpus`: the path itself, or the Hub dataset's snapshot in the Hugging Face cache
    (downloaded when missing; offline, from the cache). ConfigError naming `corpus` when it cannot be had."""
    if not is_hub_spec(corpus):
        return Path(corpus).expanduser().resolve()
    repo, revision = parse_hub_spec(corpus)
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of transformers, always installed with tunekit
        raise ConfigError(f"corpus={corpus} needs huggingface_hub: pip install huggingface_hub", key="corpus") from exc
    try:
        path = snapshot_download(repo_id=repo, repo_type="dataset", revision=revision)
    except Exception as exc:  # noqa: BLE001 - offline without a cached copy, unknown repo or revision, network
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        hint = (
            "HF_HUB_OFFLINE is set and the Hugging Face cache has no copy of it: download it once online"
            if offline
            else "check the name and revision, your network and your Hub login (gated datasets need `hf auth login`)"
        )
        first = (str(exc).strip().splitlines() or [""])[0]
        why = first if len(first) <= 160 else first[:157] + "..."
        raise ConfigError(
            f"corpus={corpus}: the dataset cannot be fetched ({type(exc).__name__}: {why}); {hint}, "
            "or give a local folder as corpus",
            key="corpus",
        ) from exc
    return Path(path).resolve()


# -- opening a local dataset ------------------------------------------------------------------------


@dataclass
class HfDataset:
    """A dataset folder opened for reading: its shards per split, its columns, its provenance."""

    root: Path  # the dataset folder (a Hub snapshot, a Parquet folder, a save_to_disk folder)
    dataset_id: str  # "org/name" for a Hub dataset, else the folder
    format: str  # parquet | arrow (save_to_disk's Arrow stream files)
    shards: dict[str, list[Path]]  # split -> its shard files, in row order
    columns: dict[str, str]  # field -> column name (fields of SourceColumns that the dataset has)
    audio_kind: str  # struct (bytes and/or path) | bytes | path
    revisions: dict[str, str | None] = field(default_factory=dict)  # split -> revision (None: not known)
    card_license: str | None = None  # the licence the dataset card (README front matter) or dataset_info states
    license_from_card: bool = False  # source.license_from_card
    paths_outside: bool = False  # source.paths_outside
    rows: int = 0  # rows in the selected splits
    problems: list[str] = field(default_factory=list)  # dataset-level notes recorded in summary.json

    def split_revision(self, split: str) -> str | None:
        """The revision recorded on a split's rows."""
        return self.revisions.get(split, self.revisions.get("*"))


def _excluded(path: Path, exclude: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved == e or e in resolved.parents for e in exclude)


def _parquet_files(root: Path, exclude: list[Path]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not _excluded(here / d, exclude))
        found += [here / n for n in filenames if n.endswith(".parquet") and not n.startswith(".")]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _front_matter(root: Path) -> dict[str, Any]:
    """The YAML front matter of the dataset card (README.md), or {}."""
    card = root / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        return {}
    import yaml

    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _card_license(meta: dict[str, Any]) -> str | None:
    """The card's licence as a string tunekit can normalise: a Hub id, or for `other` its link or name."""
    value = meta.get("license")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if value is None:
        return None
    text = str(value).strip()
    if text.lower() == "other":
        for key in ("license_link", "license_name"):
            if str(meta.get(key) or "").strip():
                return str(meta[key]).strip()
    return text or None


def _split_of(relative: str) -> str:
    """A shard's split from its path, as `datasets` infers it (file name first, then folders); else train."""
    parts = relative.split("/")
    for part in [parts[-1], *reversed(parts[:-1])]:
        found = _SPLIT_RE.match(part)
        if found:
            return SPLIT_WORDS[found.group(1).lower()]
    return "train"


def _configured_splits(root: Path, meta: dict[str, Any]) -> dict[str, list[Path]] | None:
    """Splits the card's `configs` declare (the `default` config, else the first), or None."""
    configs = meta.get("configs")
    if not isinstance(configs, list) or not configs:
        return None
    chosen = next((c for c in configs if isinstance(c, dict) and c.get("config_name") == "default"), configs[0])
    files = chosen.get("data_files") if isinstance(chosen, dict) else None
    if files is None:
        return None
    if isinstance(files, dict):
        entries = [{"split": k, "path": v} for k, v in files.items()]
    elif isinstance(files, str) or (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        entries = [{"split": "train", "path": files}]
    elif isinstance(files, list):
        entries = files
    else:
        return None
    out: dict[str, list[Path]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        patterns = entry.get("path")
        patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
        matched = sorted({p for pattern in patterns for p in root.glob(str(pattern))
                          if p.suffix == ".parquet" and _inside(p, root)})
        if matched:
            out.setdefault(str(entry.get("split") or "train"), []).extend(matched)
    return out or None


def _git_revision(root: Path) -> str | None:
    """The commit a git checkout of the dataset is at (a `git clone` of a Hub dataset), or None."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        if (git / ref).is_file():
            return (git / ref).read_text(encoding="utf-8").strip() or None
        for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _identity(root: Path) -> tuple[str, str | None]:
    """(dataset id, revision) of a folder: a Hub cache snapshot gives "org/name" and its commit."""
    parts = root.parts
    if len(parts) >= 3 and parts[-2] == "snapshots":
        found = _HUB_CACHE_RE.match(parts[-3])
        if found:
            return found.group(1).replace("--", "/"), parts[-1]
    return str(root), _git_revision(root)


def _arrow_splits(root: Path) -> tuple[dict[str, list[Path]], dict[str, str | None], dict[str, Any]] | None:
    """A save_to_disk folder's shards, fingerprints and dataset_info per split, or None when it is not one."""
    if (root / "dataset_dict.json").is_file():
        names = json.loads((root / "dataset_dict.json").read_text(encoding="utf-8")).get("splits") or []
        folders = {str(n): root / str(n) for n in names}
    elif (root / "state.json").is_file() and (root / "dataset_info.json").is_file():
        folders = {"": root}
    else:
        return None
    shards, revisions, info = {}, {}, {}
    for name, folder in folders.items():
        state = json.loads((folder / "state.json").read_text(encoding="utf-8")) if _inside(folder, root) else {}
        split = name or str(state.get("_split") or "train")
        files = [folder / str(f["filename"]) for f in state.get("_data_files") or []]
        outside = [f for f in files if not _inside(f, root)] + ([] if _inside(folder, root) else [folder])
        if outside:
            raise ConfigError(f"corpus={root}: split {split!r} names {outside[0]}, outside the dataset's folder",
                              key="corpus")
        shards[split] = files
        revisions[split] = state.get("_fingerprint")
        try:
            info = info or json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return shards, revisions, info


def _arrow_reader(source: Any) -> Any:
    """A reader over an Arrow IPC file: the stream format `datasets` writes, or the random-access file format."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        file = pa.ipc.open_file(source)
        return (file.get_batch(i) for i in range(file.num_record_batches))


def _schema(path: Path, fmt: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return pq.read_schema(str(path))
    with pa.memory_map(str(path)) as src:
        reader = _arrow_reader(src)
        return reader.schema if hasattr(reader, "schema") else next(reader).schema


def _audio_features(schema: Any) -> list[str]:
    """Columns the `datasets` features (schema metadata `huggingface`) declare as Audio."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        features = json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return []
    return [k for k, v in features.items() if isinstance(v, dict) and v.get("_type") == "Audio"]


def _audio_kind(arrow_type: Any) -> str | None:
    """struct | bytes | path for a column type that can hold audio, else None."""
    import pyarrow as pa

    if pa.types.is_struct(arrow_type):
        names = {arrow_type.field(i).name for i in range(arrow_type.num_fields)}
        return "struct" if names & {"bytes", "path"} else None
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "bytes"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "path"
    return None


def map_columns(schema: Any, columns: Any) -> tuple[dict[str, str], str, list[str]]:
    """(field -> column, audio kind, problems) for a dataset schema and `source.columns`."""
    names = list(schema.names)
    lower = {n.lower(): n for n in reversed(names)}
    listed = ", ".join(names) or "none"
    problems: list[str] = []
    mapping: dict[str, str] = {}
    for name in CANDIDATES:
        given = getattr(columns, name, None)
        if given == "":
            continue
        if given is not None:
            if given not in names:
                problems.append(
                    f"source.columns.{name}={given}: the dataset has no such column (columns: {listed}); "
                    f"name one of them, null to detect it or '' to read none"
                )
            else:
                mapping[name] = given
            continue
        if name == "audio":
            typed = [c for c in _audio_features(schema) if c in names]
            guessed = [lower[c] for c in CANDIDATES["audio"] if c in lower]
            found = next((c for c in typed + guessed if _audio_kind(schema.field(c).type)), None)
        else:
            found = next((lower[c] for c in CANDIDATES[name] if c in lower and lower[c] not in mapping.values()), None)
        if found is not None:
            mapping[name] = found
    kind = None
    if "audio" in mapping:
        kind = _audio_kind(schema.field(mapping["audio"]).type)
        if kind is None:
            problems.append(
                f"source.columns.audio={mapping['audio']}: a {schema.field(mapping['audio']).type} column holds no "
                "audio; name a column with an Audio feature, audio bytes or file paths"
            )
    elif not any(p.startswith("source.columns.audio") for p in problems):
        problems.append(f"the dataset has no audio column (columns: {listed}); set source.columns.audio=<column> "
                        "(or source.kind=files for a folder of audio files)")
    return mapping, kind or "", problems


def _count_rows(path: Path, fmt: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        return int(pq.ParquetFile(str(path)).metadata.num_rows)
    with pa.memory_map(str(path)) as src:  # batch bodies are mapped, not read
        return sum(batch.num_rows for batch in _arrow_reader(src))


def open_dataset(corpus: Path, cfg: Any, exclude: Iterable[Path] = ()) -> HfDataset | None:
    """The dataset in `corpus`, or None when it is a folder of audio files (`source.kind`, see SourceConfig).

    Reads only schemas, file footers and the card; raises ConfigErrors naming `source.*` keys for a
    dataset tunekit cannot read (no audio column, a named column it lacks, an unknown split).
    """
    if cfg.kind == "files":
        return None
    skip = [Path(p).resolve() for p in exclude]
    meta = _front_matter(corpus)
    saved = _arrow_splits(corpus)
    if saved is not None:
        fmt = "arrow"
        shards, revisions, info = saved
        card = _card_license(meta) or (str(info.get("license") or "").strip() or None)
    else:
        files = _parquet_files(corpus, skip)
        if not files:
            if cfg.kind == "dataset":
                raise ConfigError(
                    f"corpus={corpus} holds no Parquet files and no save_to_disk dataset (dataset_info.json + "
                    "state.json, or dataset_dict.json); give the dataset's folder, or set source.kind=auto",
                    key="source.kind",
                )
            return None
        fmt = "parquet"
        shards = _configured_splits(corpus, meta) or {}
        if not shards:
            for f in files:
                shards.setdefault(_split_of(f.relative_to(corpus).as_posix()), []).append(f)
        revisions = {}
        card = _card_license(meta)
    dataset_id, revision = _identity(corpus)
    if revision is not None:  # a Hub commit or a git checkout names every split's revision
        revisions = {"*": revision}
    missing = [str(p) for paths in shards.values() for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"corpus={corpus}: shard {missing[0]} is missing; the dataset is incomplete", key="corpus")
    first = next((p for paths in shards.values() for p in paths), None)
    if first is None:
        raise ConfigError(f"corpus={corpus}: the dataset has no shard files", key="corpus")
    problems: list[str] = []
    if cfg.splits is not None:
        wanted = [str(s) for s in cfg.splits]
        unknown = [s for s in wanted if s not in shards]
        if unknown:
            problems.append(
                f"source.splits: the dataset has no split {', '.join(unknown)} (splits: {', '.join(shards)})"
            )
        shards = {s: shards[s] for s in wanted if s in shards}
    try:
        schema = _schema(first, fmt)
        rows = sum(_count_rows(p, fmt) for paths in shards.values() for p in paths)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise ConfigError(f"corpus={corpus}: {first.name} cannot be read ({exc})", key="corpus") from exc
    mapping, kind, column_problems = map_columns(schema, cfg.columns)
    if cfg.kind == "auto" and "audio" not in mapping and cfg.columns.audio is None:
        return None  # Parquet files without audio (a prep output, a table of metadata): a folder of audio files
    problems += column_problems
    if problems:
        raise ConfigErrors(problems)
    ds = HfDataset(
        root=corpus, dataset_id=dataset_id, format=fmt, shards=shards, columns=mapping, audio_kind=kind,
        revisions=revisions, card_license=card, license_from_card=bool(cfg.license_from_card), rows=rows,
        paths_outside=bool(cfg.paths_outside),
    )  # fmt: skip
    if "license" not in mapping:
        ds.problems.append(
            "the dataset has no licence column (source.columns.license)"
            + (f"; its card says {card}" if card else "; its card states none")
            + (" and source.license_from_card=true applies it" if card and cfg.license_from_card else "")
        )
    return ds


# -- streaming rows into tracks ---------------------------------------------------------------------


def _lyrics(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(v).rstrip() for v in value if v is not None)
    return text_value(value) if not isinstance(value, str) else (value.strip() or None)


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"instrumental={value!r} is not true/false")


def sniff_extension(head: bytes, name: str | None = None) -> str:
    """The file extension for audio bytes, from their magic number, else from `name`, else "bin"."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "opus" if b"OpusHead" in head[:64] else "ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG frame: layer bits 00 are ADTS AAC
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    suffix = Path(name or "").suffix.lower().lstrip(".")
    return suffix if re.fullmatch(r"[a-z0-9]{1,5}", suffix) else "bin"


def materialised_root(cache_dir: Path, ds: HfDataset) -> Path:
    """The folder of links `<split>/<row:08d>.<ext>` (one per row) that the stages read as the corpus."""
    key = hashlib.sha256(f"{ds.dataset_id}\0{ds.root}\0{sorted(ds.revisions.items())}".encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ds.dataset_id.strip("/")).strip("-.")[-48:] or "dataset"
    return Path(cache_dir) / "sources" / f"{slug}-{key}"


def audio_store(cache_dir: Path) -> Path:
    """Where dataset audio is stored by content: `<sha256[:2]>/<sha256>.<ext>`."""
    return Path(cache_dir) / "sources" / "audio"


def _link(link: Path, target: Path) -> bool:
    """Point `link` at `target` (atomically); False when it already does."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return True


def _store(data: Any, store: Path, ext: str) -> tuple[Path, bool]:
    """Write audio bytes once under their sha256; (path, whether it was written now)."""
    from tunekit.atomic import atomic_path

    digest = hashlib.sha256(memoryview(data)).hexdigest()
    path = store / digest[:2] / f"{digest}.{ext}"
    if path.is_file():
        return path, False
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(memoryview(data))
    return path, True


def _sidecar(link: Path, lyrics: str | None, language: str | None) -> None:
    """The row's lyrics beside its file, where the lyrics reader (ACE-Step's `latents`) finds them."""
    from tunekit.atomic import write_json

    path = link.with_suffix(".json")
    data = {k: v for k, v in (("lyrics", lyrics), ("language", language)) if v}
    if not data:
        path.unlink(missing_ok=True)
        return
    try:
        if json.loads(path.read_text(encoding="utf-8")) == data:
            return
    except (OSError, ValueError):
        pass
    write_json(path, data)


def _batches(path: Path, fmt: str, columns: list[str]) -> Iterator[Any]:
    """Record batches of `columns` (those the shard has), one Parquet row group / Arrow batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        # One thread and no pre-buffering: pyarrow then holds exactly the row group being read (with its threads
        # or pre-buffering it keeps two to four row groups' worth allocated; the rows' audio is I/O-bound anyway).
        pf = pq.ParquetFile(str(path), pre_buffer=False)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for group in range(pf.num_row_groups):
            table = pf.read_row_group(group, columns=present, use_threads=False)
            yield from table.to_batches(max_chunksize=BATCH_ROWS)
            del table
        return
    with pa.memory_map(str(path)) as src:
        for batch in _arrow_reader(src):
            yield batch.select([c for c in columns if c in batch.schema.names])


def _audio_cell(column: Any, kind: str, i: int) -> tuple[Any, str | None]:
    """(bytes buffer or None, path or None) of one row's audio cell."""
    if column is None or not column[i].is_valid:
        return None, None
    if kind == "bytes":
        return column[i].as_buffer(), None
    if kind == "path":
        return None, column[i].as_py()
    cell = column[i]
    names = {f.name for f in column.type}
    data = cell["bytes"] if "bytes" in names else None
    path = cell["path"] if "path" in names else None
    buffer = data.as_buffer() if data is not None and data.is_valid else None
    return buffer, (path.as_py() if path is not None and path.is_valid else None)


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` lies in `root` as written (`..` resolved, links not followed: a Hub snapshot's files are
    links into its blob store)."""
    return Path(os.path.normpath(path)).is_relative_to(Path(os.path.normpath(root)))


def _source_file(path: str, shard: Path, root: Path, outside: bool) -> tuple[Path | None, str | None]:
    """(the local file an audio path names, or None; why it is refused, or None). A path is relative to its shard
    or the dataset folder, or absolute; one that leaves the dataset's folder is refused unless `outside`
    (source.paths_outside: a dataset built on this machine), so a dataset cannot make any file a track."""
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [shard.parent / p, root / p]
    if not outside:
        candidates = [c for c in candidates if _inside(c, root)]
        if not candidates:
            return None, (f"the row's audio path {path} leaves the dataset's folder {root}; set "
                          "source.paths_outside=true for a dataset built on this machine")
    return next((c.resolve() for c in candidates if c.is_file()), None), None


@dataclass
class _Counts:
    written: int = 0  # rows whose audio or link was written now
    kept: int = 0  # rows already in place
    rejected: int = 0  # rows without usable audio


class _Reader:
    """Turns the rows of one dataset into TrackRows, writing their audio into the cache."""

    def __init__(self, ds: HfDataset, cache_dir: Path) -> None:
        self.ds = ds
        self.root = materialised_root(cache_dir, ds)
        self.store = audio_store(cache_dir)
        self.counts = _Counts()
        self.wrote = False  # whether the last row's audio or link was written now

    def batch(self, batch: Any, split: str, start: int, shard: Path) -> Iterator[Any]:
        """The TrackRows of one record batch, whose first row is row `start` of its split."""
        names = batch.schema.names
        column = self.ds.columns["audio"]
        audio = batch.column(names.index(column)) if column in names else None
        values = {
            name: batch.column(names.index(col)).to_pylist() if col in names else [None] * batch.num_rows
            for name, col in self.ds.columns.items()
            if name != "audio"
        }
        for i in range(batch.num_rows):
            cell = _audio_cell(audio, self.ds.audio_kind, i)
            row = self.row(split, start + i, shard, cell, {k: v[i] for k, v in values.items()})
            del cell
            yield row

    def row(self, split: str, index: int, shard: Path, audio: tuple[Any, str | None], values: dict[str, Any]) -> Any:
        """The TrackRow of one dataset row (rejected when it has no usable audio)."""
        import dataclasses

        from tunekit.prep.ingest import track_id_for
        from tunekit.prep.rows import REJECTED, TrackRow

        split_dir = re.sub(r"[^A-Za-z0-9._-]+", "_", split).lstrip(".") or "_"  # never `..`: links stay in root
        stem = f"{split_dir}/{index:08d}"
        fields, problems = self.fields(values)
        data, path = audio
        rejection = None
        ext = ""
        written = False
        if data is not None and data.size > 0:
            ext = sniff_extension(data.slice(0, min(64, data.size)).to_pybytes(), path)
            target, written = _store(data, self.store, ext)
            written |= _link(self.root / f"{stem}.{ext}", target)
        elif path:
            source, refused = _source_file(path, shard, self.ds.root, self.ds.paths_outside)
            if refused:
                rejection = ("path_outside", refused)
            elif source is None:
                where = "" if Path(path).expanduser().is_absolute() else f" beside {shard.name} or in {self.ds.root}"
                rejection = ("unreadable", f"the row's audio path {path} is not a file{where}")
            else:
                # the name as written: a Hub snapshot's file resolves to an extension-less blob
                ext = Path(path).suffix.lower().lstrip(".")
                if not ext:
                    with open(source, "rb") as f:
                        ext = sniff_extension(f.read(64), source.name)
                written = _link(self.root / f"{stem}.{ext}", source)
        elif data is not None:
            rejection = ("empty", f"the row's audio (column {self.ds.columns['audio']}) has 0 bytes")
        else:
            rejection = ("no_audio", f"the row has no audio (column {self.ds.columns['audio']} is empty)")
        source_path = f"{stem}.{ext}" if ext else stem
        row = TrackRow(track_id=track_id_for(source_path), source_path=source_path, extension=ext)
        row = dataclasses.replace(row, metadata_problems=problems, **fields)
        row.extra.update(
            hf_dataset=self.ds.dataset_id,
            hf_revision=self.ds.split_revision(split),
            hf_split=text_value(values.get("split")) or split,
            hf_row=index,
            hf_row_id=text_value(values.get("id")),
            hf_shard=shard.relative_to(self.ds.root).as_posix() if shard.is_relative_to(self.ds.root) else str(shard),
        )
        if rejection is not None:
            self.counts.rejected += 1
            self.wrote = False
            return dataclasses.replace(
                row, status=REJECTED, reason=rejection[0], reason_detail=rejection[1], failed_stage="ingest"
            )
        _sidecar(self.root / f"{stem}.{ext}", _lyrics(values.get("lyrics")), text_value(values.get("language")))
        self.wrote = written
        if written:
            self.counts.written += 1
        else:
            self.counts.kept += 1
        return row

    def fields(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """TrackRow metadata fields of a row, and its metadata problems."""
        from tunekit.corpus.license import normalize_license
        from tunekit.prep.ingest import license_fields

        problems: list[str] = []
        names = ("artist", "title", "attribution", "source_id", "url", "genre")
        out: dict[str, Any] = {name: text_value(values.get(name)) for name in names}
        out["source"] = text_value(values.get("source")) or f"hf:{self.ds.dataset_id}"
        try:
            out["instrumental"] = _bool(values.get("instrumental"))
        except ValueError as exc:
            problems.append(f"column {self.ds.columns.get('instrumental')}: {exc}; ignored")
        raw = text_value(values.get("license"))
        info = normalize_license(raw)
        if info.family != "unknown":
            out.update(license_fields(info), license_source=f"hf_column:{self.ds.columns['license']}")
            return out, problems
        card = self.ds.card_license
        if card and self.ds.license_from_card:
            out.update(license_fields(normalize_license(card)), license_source="hf_card")
            return out, problems
        out.update(license_fields(info))
        where = f"column {self.ds.columns['license']} is empty" if "license" in self.ds.columns else "no licence column"
        if card:
            problems.append(f"no licence ({where}); the dataset card says {card}: set source.license_from_card=true "
                            "to apply it to rows without one")  # fmt: skip
        else:
            problems.append(f"no licence ({where}) and the dataset card states none")
        return out, problems


INDEX_VERSION = 2  # bump when the rows a shard gives change for the same shard and settings


def _shard_key(ds: HfDataset, split: str, start: int, shard: Path) -> str:
    """What a shard's rows depend on: the shard file (path, size, mtime), where its rows start in their split, the
    column mapping and the dataset's provenance and licence settings."""
    st = shard.stat()
    parts = [INDEX_VERSION, str(shard.resolve()), st.st_size, st.st_mtime_ns, split, start, ds.columns, ds.audio_kind,
             ds.dataset_id, ds.split_revision(split), ds.card_license, ds.license_from_card, str(ds.root)]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def _indexed_rows(index_file: Path, root: Path) -> list[Any] | None:
    """The TrackRows a shard gave when it was scanned, if its index exists and every kept row's file (the link and
    what it points to) is still in place; None means scan it again."""
    from tunekit.prep.rows import OK, TrackRow

    try:
        rows = [TrackRow(**d) for d in json.loads(index_file.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return None
    if any(r.status == OK and not (root / r.source_path).exists() for r in rows):
        return None
    if any(r.reason == "unreadable" and "is not a file" in (r.reason_detail or "") for r in rows):
        return None  # a row's audio path named no file: it may be there now
    return rows


def _write_index(index_file: Path, rows: list[Any]) -> None:
    """Record a fully scanned shard's rows (atomically: a killed scan leaves no index and rescans the shard)."""
    import dataclasses

    from tunekit.atomic import write_json

    records = [dataclasses.asdict(r) for r in rows]
    try:
        if json.loads(index_file.read_text(encoding="utf-8")) == records:
            return  # read again (a row named a missing file) and unchanged: the index stays as it was
    except (OSError, ValueError):
        pass
    write_json(index_file, records)


def scan_dataset(ds: HfDataset, cache_dir: Path, reporter: Any = None) -> tuple[list[Any], Any]:
    """One TrackRow per dataset row (split by split, in row order), each row's audio written into the cache.

    `reporter` (a prep progress reporter) shows the rows read as the stage `source`. Returns the rows and a
    ScanReport whose `root` is the folder their `source_path`s are relative to.
    """
    from tunekit.prep.engine import NullReporter, StageStats
    from tunekit.prep.ingest import ScanReport
    from tunekit.prep.rows import OK

    reporter = reporter or NullReporter()
    reader = _Reader(ds, Path(cache_dir))
    t0 = time.perf_counter()
    reporter.start_stage("source", ds.rows, 0.0)
    rows: list[Any] = []
    wanted = list(dict.fromkeys(ds.columns.values()))
    for split, shards in ds.shards.items():
        index = 0
        for shard in shards:
            index_file = reader.root / ".index" / f"{_shard_key(ds, split, index, shard)}.json"
            done = _indexed_rows(index_file, reader.root)
            if done is not None:  # scanned before and unchanged, every file in place: no byte is read again
                for row in done:
                    rows.append(row)
                    index += 1
                    if row.status == OK:
                        reader.counts.kept += 1
                    else:
                        reader.counts.rejected += 1
                    reporter.advance("source", 0.0, "cached", row.status != OK)
                continue
            first = len(rows)
            for batch in _batches(shard, ds.format, wanted):
                for row in reader.batch(batch, split, index, shard):
                    rows.append(row)
                    index += 1
                    reporter.advance("source", 0.0, "computed" if reader.wrote else "cached", row.status != OK)
                del batch  # the next row group is read once this one's buffers are released
            _write_index(index_file, rows[first:])
    stats = StageStats("source", rows=len(rows), computed=reader.counts.written, cached=reader.counts.kept,
                       rejected=reader.counts.rejected, wall_s=time.perf_counter() - t0)  # fmt: skip
    reporter.end_stage(stats)
    report = ScanReport(
        audio_files=len(rows) - reader.counts.rejected, metadata_problems=list(ds.problems), root=str(reader.root)
    )
    return rows, report

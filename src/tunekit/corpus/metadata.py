"""Per-track metadata from three sources: a sidecar JSON, the corpus's metadata.csv, embedded tags.

Priority, field by field: sidecar `<audio name without extension>.json` next to the audio, then
the row of `metadata.csv` / `metadata.tsv` / `metadata.jsonl` at the corpus root whose `path` (or `file_name`, as
in a Hugging Face AudioFolder dataset) names the file, then
tags embedded in the file (ID3 / Vorbis comments, as soundfile exposes them). A licence that says
nothing ("unknown", "n/a") does not hide another source's licence. When the sidecar and the table
name different licences the sidecar's is used and the disagreement is kept in `license_conflict`
(with both strings in `license_candidates`), for the licence stage to decide. Bad metadata never
stops a run: problems are recorded on the track (`problems`) or the corpus (`problems`) so the
caller can reject with a reason. The format is documented in data/README.md.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tunekit.corpus.license import LicenseInfo, normalize_license
from tunekit.errors import ConfigError

METADATA_FILES = ("metadata.csv", "metadata.tsv", "metadata.jsonl")
TEXT_FIELDS = (
    "license", "artist", "title", "attribution", "source", "source_id", "url", "genre", "date_observed",
    "lyrics_file", "language",
)
FIELDS = TEXT_FIELDS + ("tags", "instrumental", "lyrics")
# Column / key spellings accepted for the fields above.
_ALIASES = {"licence": "license", "observed": "date_observed", "file": "path", "file_name": "path",
            "lang": "language", "lyrics_path": "lyrics_file"}
_TRUE = frozenset({"true", "yes", "y", "1", "t"})
_FALSE = frozenset({"false", "no", "n", "0", "f"})
_EMBEDDED = ("title", "artist", "license", "copyright", "genre", "date", "album", "comment")


@dataclass
class TrackMetadata:
    """Everything known about one track's provenance. Missing fields are None (tags: empty)."""

    path: Path
    license: str | None = None
    artist: str | None = None
    title: str | None = None
    attribution: str | None = None
    source: str | None = None
    source_id: str | None = None
    url: str | None = None
    genre: str | None = None
    tags: list[str] = field(default_factory=list)
    instrumental: bool | None = None
    date_observed: str | None = None
    lyrics: str | None = None  # the track's lyrics (plain text, or LRC with timestamps)
    lyrics_file: str | None = None  # a .txt or .lrc file of lyrics, relative to the corpus root
    language: str | None = None  # the language of the lyrics (e.g. en, ja)
    license_info: LicenseInfo = field(default_factory=lambda: normalize_license(None))
    license_source: str | None = None  # which source gave the licence: sidecar, csv or embedded
    license_conflict: str | None = None  # "sidecar: CC-BY-NC-SA-4.0; csv: CC-BY-ND-4.0" when the two disagree
    license_candidates: dict[str, str] = field(default_factory=dict)  # source -> licence string, in a conflict
    metadata_source: str = "none"  # sources with fields for this track, by priority: e.g. "sidecar+csv"
    extra: dict[str, Any] = field(default_factory=dict)  # fields tunekit does not interpret, kept as given
    problems: list[str] = field(default_factory=list)  # reasons this metadata cannot be trusted


def _clean_key(key: Any) -> str | None:
    k = str(key).strip().lower().replace(" ", "_")
    return _ALIASES.get(k, k) if k else None


def text_value(value: Any) -> str | None:
    """A metadata value as text: lists joined with ", ", bytes decoded as UTF-8, 3.0 as "3"; None when empty."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [s for s in (text_value(v) for v in value) if s]
        return ", ".join(parts) or None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _tags(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [text_value(v) for v in value]
    else:
        items = [s.strip() for s in re.split(r"[,;]", str(value))]
    tags = [t for t in items if t]
    return tags or None


def _lyrics(value: Any) -> str | None:
    """Lyrics as one text: a list of lines is joined with newlines; line breaks inside the text are kept."""
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(v).rstrip() for v in value if v is not None)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"instrumental={value!r} is not true/false (use true/false, yes/no or 1/0)")


def _parse_fields(raw: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """Known fields parsed to their types (empty values dropped); unknown keys kept under 'extra'."""
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        name = _clean_key(key)
        if name is None or name == "path":
            continue
        if name == "tags":
            parsed: Any = _tags(value)
        elif name == "lyrics":
            parsed = _lyrics(value)
        elif name == "instrumental":
            try:
                parsed = _bool(value)
            except ValueError as e:
                problems.append(f"{where}: {e}")
                parsed = None
        elif name in TEXT_FIELDS:
            parsed = text_value(value)
        else:
            if value not in (None, ""):
                extra[name] = value
            continue
        if parsed is not None:
            out[name] = parsed
    if extra:
        out["extra"] = extra
    return out


def _json_lines(f: Any, table: Path, problems: list[str]) -> Any:
    """(line number, object) of each non-empty line of a JSON-lines table; a line that is not an object is
    listed in `problems` and skipped."""
    for line, text in enumerate(f, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append(f"{table.name} line {line}: not JSON ({exc.msg}); row ignored")
            continue
        if not isinstance(row, dict):
            problems.append(f"{table.name} line {line}: not a JSON object; row ignored")
            continue
        yield line, row


def _relative_key(raw: str) -> str | None:
    """The normalised corpus-relative POSIX path of a metadata row, or None if it leaves the root."""
    text = raw.strip().replace("\\", "/")
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def read_sidecar(audio_path: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """The sidecar JSON of `audio_path` as parsed fields (None if there is none) and its problems."""
    sidecar = audio_path.with_suffix(".json")
    if not sidecar.is_file():
        return None, []
    problems: list[str] = []
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [f"sidecar_invalid: {sidecar.name} is not valid UTF-8 JSON ({e})"]
    except OSError as e:
        return None, [f"sidecar_unreadable: {sidecar.name}: {e}"]
    if not isinstance(data, dict):
        return None, [f"sidecar_invalid: {sidecar.name} must hold a JSON object, not {type(data).__name__}"]
    return _parse_fields(data, sidecar.name, problems), problems


def read_embedded(audio_path: Path) -> dict[str, Any]:
    """Tags embedded in the audio file that soundfile exposes (WAV INFO, FLAC/Ogg Vorbis comments, MP3 ID3).

    A `copyright` tag counts as the licence only when it names a recognised licence; otherwise
    it is kept in `extra`. Files soundfile cannot open give no tags (decoding reports them).
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(audio_path)) as f:
            tags = f.copy_metadata()
    except (sf.LibsndfileError, RuntimeError, OSError, TypeError, ValueError):
        return {}
    raw = {k: v for k, v in tags.items() if k in _EMBEDDED and text_value(v)}
    copyright_text = raw.pop("copyright", None)
    if copyright_text and "license" not in raw and normalize_license(copyright_text).family not in ("other", "unknown"):
        raw["license"] = copyright_text
    elif copyright_text:
        raw["copyright"] = copyright_text
    return _parse_fields(raw, f"{audio_path.name} (embedded tags)", [])


@dataclass
class CorpusMetadata:
    """The metadata table of one corpus root; `for_track` merges it with sidecars and embedded tags."""

    root: Path
    table_path: Path | None = None
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # corpus-relative POSIX path -> fields
    row_problems: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # rows that were ignored, and why
    read_embedded_tags: bool = True

    def for_track(self, audio_path: Path) -> TrackMetadata:
        """Merged metadata of one audio file (absolute, or relative to the corpus root)."""
        audio_path = Path(audio_path)
        if not audio_path.is_absolute():
            audio_path = self.root / audio_path
        key = _relative_to(audio_path, self.root)
        problems: list[str] = []
        sources: list[tuple[str, dict[str, Any]]] = []
        sidecar, sidecar_problems = read_sidecar(audio_path)
        problems += sidecar_problems
        if sidecar:
            sources.append(("sidecar", sidecar))
        if key is not None and key in self.rows:
            sources.append(("csv", self.rows[key]))
            problems += self.row_problems.get(key, [])
        if self.read_embedded_tags:
            embedded = read_embedded(audio_path)
            if embedded:
                sources.append(("embedded", embedded))
        merged: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name, fields_ in reversed(sources):  # lowest priority first; higher ones overwrite
            for k, v in fields_.items():
                if k == "extra":
                    extra.update(v)
                else:
                    merged[k] = v
                    origin[k] = name
        stated = [(name, f["license"]) for name, f in sources
                  if f.get("license") and normalize_license(f["license"]).family != "unknown"]
        if stated:  # the first source that states a licence, by priority
            merged["license"], origin["license"] = stated[0][1], stated[0][0]
        conflict, candidates = license_conflict(dict(stated))
        return TrackMetadata(
            path=audio_path,
            tags=list(merged.pop("tags", [])),
            license_info=normalize_license(merged.get("license")),
            license_source=origin.get("license"),
            license_conflict=conflict,
            license_candidates=candidates,
            metadata_source="+".join(name for name, _ in sources) or "none",
            extra=extra,
            problems=problems,
            **merged,
        )


def _same_licence(a: LicenseInfo, b: LicenseInfo) -> bool:
    """Whether two licences agree: the same id, or the same CC licence where one omits the version."""
    if a.id == b.id:
        return True
    return a.family == b.family and a.family not in ("other", "unknown") and None in (a.version, b.version)


def license_conflict(stated: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """Whether the sidecar and the metadata table name different licences.

    `stated` maps a source (sidecar, csv, embedded) to its licence string. Returns a description naming
    both licences by id ("sidecar: CC-BY-NC-SA-4.0; csv: CC-BY-ND-4.0") and the two strings, or
    (None, {}) when they agree or one is missing. Embedded tags only fill a missing licence: they never conflict.
    """
    if "sidecar" not in stated or "csv" not in stated:
        return None, {}
    side, table = normalize_license(stated["sidecar"]), normalize_license(stated["csv"])
    if _same_licence(side, table):
        return None, {}
    return f"sidecar: {side.id}; csv: {table.id}", {"sidecar": stated["sidecar"], "csv": stated["csv"]}


def _relative_to(path: Path, root: Path) -> str | None:
    """`path` relative to `root` as POSIX text, lexically (symlinks are not followed), or None."""
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    return None if rel.parts[:1] == ("..",) else rel.as_posix()


def load_corpus_metadata(root: Path, read_embedded_tags: bool = True) -> CorpusMetadata:
    """Read `metadata.csv`, `metadata.tsv` or `metadata.jsonl` (one JSON object a line, as Hugging Face's
    AudioFolder reads it) at the corpus root (if any) once.

    Raises ConfigError if more than one exists or the table has no `path` (or `file_name`) column. Rows whose path
    leaves the root (`../x`, absolute) or repeats an earlier row are ignored and listed in `problems`.
    """
    root = Path(root)
    found = [root / name for name in METADATA_FILES if (root / name).is_file()]
    meta = CorpusMetadata(root=root, read_embedded_tags=read_embedded_tags)
    if not found:
        return meta
    if len(found) > 1:
        raise ConfigError(
            f"{root} has {' and '.join(p.name for p in found)}; keep one of them", key=str(found[0])
        )
    table = found[0]
    meta.table_path = table
    with open(table, encoding="utf-8-sig", newline="") as f:
        if table.suffix == ".jsonl":
            rows = list(_json_lines(f, table, meta.problems))
            names = list(dict.fromkeys(k for _, row in rows for k in row))
        else:
            reader = csv.DictReader(f, delimiter="\t" if table.suffix == ".tsv" else ",")
            names = [c for c in (reader.fieldnames or []) if c is not None]
            rows = list(enumerate(reader, start=2))
        columns = {_clean_key(c): c for c in names}
        if "path" not in columns:
            raise ConfigError(
                f"{table} has no 'path' column (columns: {', '.join(names) or 'none'}); add a 'path' (or "
                "'file_name') column with each audio file's path relative to the corpus root",
                key=str(table),
            )
        path_column = columns["path"]
        for line, row in rows:
            raw_path = str(row.get(path_column) or "").strip()
            where = f"{table.name} line {line}"
            if not raw_path:
                meta.problems.append(f"{where}: empty path; row ignored")
                continue
            key = _relative_key(raw_path)
            if key is None:
                meta.problems.append(f"{where}: path {raw_path!r} is not inside the corpus root; row ignored")
                continue
            if key in meta.rows:
                meta.problems.append(f"{where}: path {raw_path!r} repeats an earlier row; row ignored")
                continue
            row_problems: list[str] = []
            values = {k: v for k, v in row.items() if k is not None}
            if None in row:  # more cells than header columns
                row_problems.append(f"{where}: more cells than columns; extra cells ignored")
            meta.rows[key] = _parse_fields(values, where, row_problems)
            if row_problems:
                meta.row_problems[key] = row_problems
    return meta

"""Convert the metadata of public corpora (FMA, MTG-Jamendo) into tunekit's metadata.csv.

Each converter reads the corpus's own metadata files and writes one `metadata.csv` row per
track whose audio is present, with paths relative to the folder the CSV is written to (the
corpus root given to `tunekit prep`). See data/README.md for where to get each corpus.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import io
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tunekit.atomic import write_text
from tunekit.errors import ConfigError

OUTPUT_COLUMNS = (
    "path", "license", "artist", "title", "attribution", "source", "source_id", "url", "genre", "tags",
    "instrumental", "date_observed",
)


@dataclass
class AdapterReport:
    """What a converter wrote: rows written, tracks skipped because their audio is absent, problems."""

    out_csv: Path
    written: int = 0
    missing_audio: int = 0
    problems: list[str] = field(default_factory=list)


@contextmanager
def _large_csv_fields() -> Iterator[None]:
    """FMA's tracks.csv holds long free-text fields (artist bios) above csv's default limit."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _relative_path(audio: Path, out_dir: Path, what: str) -> str:
    rel = os.path.relpath(os.path.abspath(audio), os.path.abspath(out_dir))
    if Path(rel).parts[:1] == ("..",):
        raise ConfigError(
            f"{what}: the audio ({audio}) is not inside the folder of the output CSV ({out_dir}); "
            "write the CSV into the audio root or one of its parents",
            key=str(out_dir),
        )
    return Path(rel).as_posix()


def _write_csv(out_csv: Path, rows: list[dict[str, str]], extra_columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(OUTPUT_COLUMNS) + extra_columns, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_csv, buf.getvalue())


def _check_date(observed: str | None, key: str) -> str | None:
    if observed is None or observed == "":
        return None
    try:
        return dt.date.fromisoformat(str(observed)).isoformat()
    except ValueError:
        raise ConfigError(f"{key}={observed!r} is not a date; use YYYY-MM-DD", key=key) from None


def _fma_tags(raw: str) -> list[str]:
    """FMA stores lists as Python literals: "['indie', 'rock']" or "[21, 12]"."""
    raw = (raw or "").strip()
    if not raw:
        return []
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return [t.strip() for t in raw.strip("[]").split(",") if t.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [str(value)]


def _tag_cell(tag: str) -> str:
    """A tag as one item of the `tags` column, whose items are separated by ',' or ';'."""
    return " ".join(tag.replace(";", " ").replace(",", " ").split())


def _fma_genre_names(tracks_csv: Path) -> dict[str, str]:
    """genre_id -> title from genres.csv next to tracks.csv (empty if it is not there)."""
    genres_csv = tracks_csv.with_name("genres.csv")
    if not genres_csv.is_file():
        return {}
    with open(genres_csv, encoding="utf-8", newline="") as f:
        return {row["genre_id"]: row["title"] for row in csv.DictReader(f) if row.get("genre_id") and row.get("title")}


def fma_audio_path(audio_root: Path, track_id: int) -> Path:
    """Where FMA keeps a track: `<audio_root>/000/000002.mp3` for track 2."""
    name = f"{track_id:06d}"
    return Path(audio_root) / name[:3] / f"{name}.mp3"


def fma_to_metadata_csv(
    tracks_csv: Path,
    audio_root: Path,
    out_csv: Path,
    observed: str | None = None,
    only_existing: bool = True,
) -> AdapterReport:
    """Convert FMA's `fma_metadata/tracks.csv` into a tunekit metadata.csv.

    tracks.csv has a three-row header (level 0 e.g. "track"/"artist", level 1 e.g. "license",
    then "track_id"); the licence is the per-track title FMA shows ("Attribution-NonCommercial-
    ShareAlike 3.0 International"). Genre ids in (track, genres_all) become names when
    `genres.csv` sits next to tracks.csv. `observed` (YYYY-MM-DD) is when the metadata was
    downloaded. Tracks whose mp3 is not under `audio_root` (e.g. `fma_full/`) are skipped
    unless `only_existing` is false.
    """
    tracks_csv, audio_root, out_csv = Path(tracks_csv), Path(audio_root), Path(out_csv)
    observed = _check_date(observed, "observed")
    report = AdapterReport(out_csv=out_csv)
    genre_names = _fma_genre_names(tracks_csv)
    rows: list[dict[str, str]] = []
    with _large_csv_fields(), open(tracks_csv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            level0, level1, level2 = next(reader), next(reader), next(reader)
        except StopIteration:
            raise ConfigError(f"{tracks_csv} is not FMA's tracks.csv: it needs a three-row header",
                              key=str(tracks_csv)) from None
        if not level2 or level2[0].strip() != "track_id":
            raise ConfigError(
                f"{tracks_csv} is not FMA's tracks.csv: its third header row should start with 'track_id'",
                key=str(tracks_csv),
            )
        index: dict[tuple[str, str], int] = {}
        for i, (a, b) in enumerate(zip(level0, level1)):
            if a and b:
                index.setdefault((a.strip(), b.strip()), i)
        required = [("track", "license"), ("track", "title"), ("artist", "name")]
        missing = [f"({a}, {b})" for a, b in required if (a, b) not in index]
        if missing:
            raise ConfigError(f"{tracks_csv} lacks the column(s) {', '.join(missing)} of FMA's tracks.csv",
                              key=str(tracks_csv))

        def cell(row: list[str], a: str, b: str) -> str:
            i = index.get((a, b))
            return row[i].strip() if i is not None and i < len(row) else ""

        out_dir = out_csv.parent
        for line, row in enumerate(reader, start=4):
            if not row or not row[0].strip():
                continue
            try:
                track_id = int(row[0])
            except ValueError:
                report.problems.append(f"{tracks_csv.name} line {line}: track_id {row[0]!r} is not a number")
                continue
            audio = fma_audio_path(audio_root, track_id)
            if only_existing and not audio.is_file():
                report.missing_audio += 1
                continue
            genres = [genre_names.get(g, "") for g in _fma_tags(cell(row, "track", "genres_all"))]
            tags = [t for t in genres if t] + _fma_tags(cell(row, "track", "tags"))
            rows.append({
                "path": _relative_path(audio, out_dir, "fma_to_metadata_csv"),
                "license": cell(row, "track", "license"),
                "artist": cell(row, "artist", "name"),
                "title": cell(row, "track", "title"),
                "source": "fma",
                "source_id": str(track_id),
                "url": cell(row, "track", "url") or cell(row, "track", "track_url"),
                "genre": cell(row, "track", "genre_top"),
                "tags": "; ".join(dict.fromkeys(_tag_cell(t) for t in tags)),
                "date_observed": observed or "",
                "fma_subset": cell(row, "set", "subset"),
            })
    _write_csv(out_csv, rows, ["fma_subset"])
    report.written = len(rows)
    return report


_URL_RE = re.compile(r"https?://\S+")


def _read_audio_licenses_txt(lines: list[str]) -> dict[str, str]:
    """MTG's `audio_licenses.txt`: an audio path line (`14/214.mp3`), then lines naming the Jamendo
    page and the licence ("Available under a … : http://creativecommons.org/licenses/…")."""
    out: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if " " not in text and text.lower().endswith(".mp3"):
            current = text
            continue
        if current is None:
            continue
        for url in _URL_RE.findall(text):
            if "creativecommons.org" in url or "opendatacommons.org" in url:
                out.setdefault(current, url.rstrip(".,;"))
    return out


def _read_license_map(licenses: Mapping[str, str] | Path) -> dict[str, str]:
    """Track id or audio path -> licence, from a mapping, MTG's `audio_licenses.txt`, or a CSV/TSV
    with a track id column (TRACK_ID) and a licence column (license / license_ccurl)."""
    if isinstance(licenses, Mapping):
        return {str(k): str(v) for k, v in licenses.items()}
    path = Path(licenses)
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if " " not in first and first.lower().endswith(".mp3"):
        return _read_audio_licenses_txt(lines)
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if "\t" in first else ",")
    cols = {c.strip().lower(): c for c in reader.fieldnames or []}
    id_col = next((cols[c] for c in ("track_id", "id", "path") if c in cols), None)
    lic_col = next((cols[c] for c in ("license", "licence", "license_ccurl", "license_url") if c in cols), None)
    if id_col is None or lic_col is None:
        raise ConfigError(
            f"{path} needs a track id column (TRACK_ID) and a licence column (license or license_ccurl); "
            f"found: {', '.join(reader.fieldnames or []) or 'no header'}",
            key=str(path),
        )
    return {row[id_col].strip(): (row[lic_col] or "").strip() for row in reader if row.get(id_col)}


def _read_jamendo_meta(meta_tsv: Path) -> dict[str, dict[str, str]]:
    """TRACK_ID -> row of `raw.meta.tsv` (TRACK_ID ARTIST_ID ALBUM_ID TRACK_NAME ARTIST_NAME
    ALBUM_NAME RELEASEDATE URL). Tabs alone delimit: titles hold unmatched quote characters."""
    out: dict[str, dict[str, str]] = {}
    with open(meta_tsv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip().upper() for h in next(reader, [])]
        for cells in reader:
            if len(cells) > len(header) and "TRACK_NAME" in header:
                # A few rows carry one empty extra cell after the title: drop it.
                after = header.index("TRACK_NAME") + 1
                if after < len(cells) and not cells[after].strip():
                    del cells[after]
            row = {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}
            if row.get("TRACK_ID"):
                out[row["TRACK_ID"]] = row
    return out


def _jamendo_number(track_id: str) -> str:
    """'track_0000214' -> '214' (Jamendo's own id, used in its URLs)."""
    digits = track_id.rsplit("_", 1)[-1]
    return str(int(digits)) if digits.isdigit() else track_id


def jamendo_to_metadata_csv(
    tsv: Path,
    audio_root: Path,
    out_csv: Path,
    observed: str | None = None,
    licenses: Mapping[str, str] | Path | None = None,
    meta_tsv: Path | None = None,
    only_existing: bool = True,
) -> AdapterReport:
    """Convert an MTG-Jamendo split TSV (e.g. `autotagging.tsv`) into a tunekit metadata.csv.

    Rows are `TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION TAG TAG …`, tags such as `genre---rock`,
    `mood/theme---happy`, `instrument---piano`: genres become `genre`, every tag value goes to
    `tags`, moods and instruments also to `moods` / `instruments` columns. The split TSVs carry
    no licences: pass `licenses` (MTG's `audio_licenses.txt`, a CSV/TSV of TRACK_ID and license
    such as the `license_ccurl` Jamendo's API returns, or a mapping by track id or path), or add
    a `LICENSE` column before TAGS, and `observed`, the date (YYYY-MM-DD) the licences were
    fetched, because Jamendo licences can change. `meta_tsv`
    (`raw.meta.tsv`) adds artist, title and URL. Audio is looked up at `<audio_root>/<PATH>`,
    falling back to the `.low.mp3` variant of the low-quality download.
    """
    tsv, audio_root, out_csv = Path(tsv), Path(audio_root), Path(out_csv)
    observed = _check_date(observed, "observed")
    report = AdapterReport(out_csv=out_csv)
    license_map = _read_license_map(licenses) if licenses is not None else {}
    names = _read_jamendo_meta(Path(meta_tsv)) if meta_tsv is not None else {}
    rows: list[dict[str, str]] = []
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip().upper() for h in next(reader, [])]
        fixed = ["TRACK_ID", "PATH", "TAGS"]
        missing = [c for c in fixed if c not in header]
        if missing:
            raise ConfigError(
                f"{tsv} is not an MTG-Jamendo TSV: missing column(s) {', '.join(missing)} "
                "(expected TRACK_ID, ARTIST_ID, ALBUM_ID, PATH, DURATION, TAGS)",
                key=str(tsv),
            )
        col = {name: i for i, name in enumerate(header)}
        tags_at = col["TAGS"]
        if col.get("LICENSE", -1) > tags_at:
            raise ConfigError(f"{tsv}: the LICENSE column must come before TAGS (tags run to the end of each row)",
                              key=str(tsv))
        out_dir = out_csv.parent
        for cells in reader:
            if not cells or not cells[0].strip():
                continue
            track_id = cells[col["TRACK_ID"]].strip()
            rel = cells[col["PATH"]].strip() if len(cells) > col["PATH"] else ""
            audio = audio_root / rel
            if rel and not audio.is_file() and audio.with_suffix(".low.mp3").is_file():
                audio = audio.with_suffix(".low.mp3")
            if not rel or (only_existing and not audio.is_file()):
                report.missing_audio += 1
                continue
            # Tags run from the TAGS column to the end of the row (one tag per cell).
            tag_cells = [c.strip() for c in cells[tags_at:] if c.strip()]
            genres, moods, instruments, values = [], [], [], []
            for tag in tag_cells:
                kind, _, value = tag.partition("---")
                if not value:
                    kind, value = "", tag
                values.append(value)
                if kind == "genre":
                    genres.append(value)
                elif kind == "mood/theme":
                    moods.append(value)
                elif kind == "instrument":
                    instruments.append(value)
            license_text = license_map.get(track_id) or license_map.get(rel) or ""
            if not license_text and "LICENSE" in col and len(cells) > col["LICENSE"]:
                license_text = cells[col["LICENSE"]].strip()
            meta = names.get(track_id, {})
            rows.append({
                "path": _relative_path(audio, out_dir, "jamendo_to_metadata_csv"),
                "license": license_text,
                "artist": meta.get("ARTIST_NAME", ""),
                "title": meta.get("TRACK_NAME", ""),
                "source": "jamendo",
                "source_id": track_id,
                "url": meta.get("URL") or f"https://www.jamendo.com/track/{_jamendo_number(track_id)}",
                "genre": ", ".join(genres),
                "tags": "; ".join(dict.fromkeys(_tag_cell(v) for v in values)),
                "date_observed": (observed or "") if license_text else "",
                "moods": "; ".join(moods),
                "instruments": "; ".join(instruments),
            })
    _write_csv(out_csv, rows, ["moods", "instruments"])
    report.written = len(rows)
    return report

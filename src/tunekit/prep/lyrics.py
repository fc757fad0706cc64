"""Lyrics for ACE-Step conditioning: where a track's lyrics come from, LRC timestamps, a window's share of them.

Sources, first found wins: the track is instrumental (its metadata says so, or separation removed its vocals)
→ `[Instrumental]`; a sidecar `<audio stem>.lrc`, then `<audio stem>.txt`, beside the audio file; the metadata's
`lyrics_file` (a .txt or .lrc path relative to the corpus root, which it may not leave); the metadata's `lyrics`
text. A track with none is conditioned as `[Instrumental]` too, with no source. Timestamps are stripped
everywhere; timed lyrics (LRC lines with `[mm:ss.xx]`) give each window the lines whose time falls inside it,
untimed lyrics go whole to every window of the track. The language comes from the metadata (`language`/`lang`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTRUMENTAL = "[Instrumental]"  # the lyrics ACE-Step is given for music without vocals
LYRICS_SUFFIXES = (".lrc", ".txt")  # sidecar lyrics beside the audio, in the order they are looked for
SOURCES = {".lrc": "sidecar_lrc", ".txt": "sidecar_txt"}

# [mm:ss], [mm:ss.xx], [mm:ss:xx] or [hh:mm:ss.xx] at the start of an LRC line (several for a repeated line).
_TIME = re.compile(r"\[(?:(\d+):)?(\d+):(\d{1,2})(?:[.:](\d{1,3}))?\]")
_WORD_TIME = re.compile(r"<(?:\d+:)?\d+:\d{1,2}(?:[.:]\d{1,3})?>")  # enhanced LRC word timing
_ID_TAG = re.compile(r"^\[(ar|al|ti|au|by|re|ve|tool|length|offset|#)\s*:(.*)\]$", re.IGNORECASE)


class LyricsError(ValueError):
    """A track's lyrics exist but cannot be used (the track is rejected with this message)."""


@dataclass(frozen=True)
class Lyrics:
    """A track's lyrics as the conditioning uses them."""

    text: str  # the whole lyrics with timestamps stripped, or "[Instrumental]"
    source: str | None  # sidecar_lrc | sidecar_txt | metadata | instrumental | None (none found)
    language: str | None = None  # the metadata's language of the lyrics; None for instrumental tracks
    timed: tuple[tuple[float, str], ...] = ()  # (seconds, line) of timed lyrics, in time order; empty if untimed

    def for_window(self, start_s: float, duration_s: float) -> str:
        """The lyrics of the window [start_s, start_s + duration_s): timed lines inside it, else the whole text.

        A window of timed lyrics in which no line starts is `[Instrumental]`."""
        if not self.timed:
            return self.text
        end = start_s + duration_s
        lines = [line for t, line in self.timed if start_s <= t < end]
        return "\n".join(lines) if lines else INSTRUMENTAL


def _seconds(match: re.Match[str]) -> float:
    hours, minutes, seconds, fraction = match.groups()
    value = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return value + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def parse_lyrics(raw: str) -> tuple[str, tuple[tuple[float, str], ...]]:
    """(text without timestamps, timed lines) of plain or LRC lyrics; timed lines are empty for untimed text.

    LRC ID tags ([ar:…], [ti:…]) are dropped and `[offset:±ms]` applied (positive: the lines come earlier);
    a line with several timestamps is repeated at each. An untimed line inside timed lyrics (a `[chorus]`
    header) takes the time of the next timed line, or of the previous one at the end.
    """
    offset = 0.0
    entries: list[tuple[float | None, str]] = []
    for line in raw.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _WORD_TIME.sub("", line.strip())
        tag = _ID_TAG.match(line)
        if tag:
            if tag.group(1).lower() == "offset":
                try:
                    offset = float(tag.group(2).strip()) / 1000.0
                except ValueError:
                    pass
            continue
        times: list[float] = []
        while (found := _TIME.match(line)) is not None:
            times.append(_seconds(found))
            line = line[found.end() :]
        line = line.strip()
        if times:
            entries.extend((t - offset, line) for t in times)
        else:
            entries.append((None, line))
    if not any(t is not None for t, _ in entries):
        return "\n".join(line for _, line in entries).strip(), ()
    filled: list[tuple[float, str]] = []
    pending: list[str] = []
    for t, line in entries:
        if t is None:
            if line:
                pending.append(line)
            continue
        filled.extend((t, p) for p in pending)
        pending = []
        if line:
            filled.append((t, line))
    if pending and filled:
        filled.extend((filled[-1][0], p) for p in pending)
    timed = tuple(sorted(filled, key=lambda item: item[0]))  # stable: lines of one time keep their order
    return "\n".join(line for _, line in timed), timed


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LyricsError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    except OSError as exc:
        raise LyricsError(f"{what} cannot be read ({exc.strerror or exc})") from exc


def metadata_lyrics_path(corpus_root: Path, relative: str) -> Path:
    """The file a metadata `lyrics_file` names: a .txt or .lrc inside the corpus root (symlinks resolved)."""
    text = relative.strip().replace("\\", "/")
    root = corpus_root.resolve()
    if not text or text.startswith("/") or re.match(r"^[A-Za-z]:", text):
        raise LyricsError(f"lyrics_file {relative!r} is not a path relative to the corpus root")
    path = (root / text).resolve()
    if not path.is_relative_to(root):
        raise LyricsError(f"lyrics_file {relative!r} leaves the corpus root {root}; it is not read")
    if path.suffix.lower() not in LYRICS_SUFFIXES:
        raise LyricsError(f"lyrics_file {relative!r} is not a .txt or .lrc file")
    if not path.is_file():
        raise LyricsError(f"lyrics_file {relative!r} does not exist under the corpus root")
    return path


def _language(value: Any) -> str | None:
    text = str(value).strip().lower() if value is not None else ""
    return text or None


def track_lyrics(audio_path: Path, corpus_root: Path, metadata: Any, *, instrumental: bool) -> Lyrics:
    """The lyrics of the track at `audio_path`, from its sidecars or `metadata` (a corpus TrackMetadata).

    `instrumental`: the track has no vocals (its metadata says so, or they were separated out). Raises
    LyricsError when lyrics are named but unusable (unreadable, not UTF-8, a path leaving the corpus root):
    a track with vocals must not be trained as instrumental by accident.
    """
    if instrumental:
        return Lyrics(INSTRUMENTAL, "instrumental")
    language = _language(getattr(metadata, "language", None))
    for suffix in LYRICS_SUFFIXES:
        sidecar = audio_path.with_suffix(suffix)
        if sidecar.is_file():
            text, timed = parse_lyrics(_read(sidecar, sidecar.name))
            if text:
                return Lyrics(text, SOURCES[suffix], language, timed)
    named = getattr(metadata, "lyrics_file", None)
    if named:
        text, timed = parse_lyrics(_read(metadata_lyrics_path(corpus_root, named), f"lyrics_file {named!r}"))
        if not text:
            raise LyricsError(f"lyrics_file {named!r} is empty")
        return Lyrics(text, "metadata", language, timed)
    given = getattr(metadata, "lyrics", None)
    if given:
        text, timed = parse_lyrics(given)
        if text:
            return Lyrics(text, "metadata", language, timed)
    return Lyrics(INSTRUMENTAL, None)

"""Tag vocabularies (genres, moods/themes, instruments) and the text matching built on them.

The vocabularies are plain text files in `configs/vocab/` (one label per line, aliases after `|`).
They fix what the tagger may emit and what a caption may name: metadata tags are mapped onto them,
CLAP scores them zero-shot, and the caption validator finds their mentions in free text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tunekit.errors import ConfigError
from tunekit.paths import resource_dir

KINDS = ("genres", "moods", "instruments")
VOCAB_FILES = {"genres": "genres.txt", "moods": "moodtheme.txt", "instruments": "instruments.txt"}


def squash(text: str) -> str:
    """Lowercase and drop everything but letters and digits ("Electric-Guitar" -> "electricguitar")."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _stem(word: str) -> str:
    # Plural stripping only: enough to match "drums"/"drum", "strings"/"string", "synths"/"synth".
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def word_tokens(text: str) -> list[str]:
    """Lowercased, plural-stripped word tokens; hyphens and punctuation separate words, '&' is kept."""
    words = re.findall(r"[a-z0-9&]+", text.lower().replace("'", ""))
    return [_stem(w) for w in words]


@dataclass(frozen=True)
class Vocabulary:
    """One tag vocabulary: its labels in file order and every alias (label included) per label."""

    kind: str
    labels: tuple[str, ...]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def match(self, raw: str) -> str | None:
        """The label a metadata tag names (label or alias, compared squashed and plural-stripped), or None."""
        table = self._squashed()
        for key in (squash(raw), "".join(word_tokens(raw))):
            if key and key in table:
                return table[key]
        return None

    def _squashed(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for label in self.labels:
            for alias in (label, *self.aliases.get(label, ())):
                table.setdefault(squash(alias), label)
                table.setdefault("".join(word_tokens(alias)), label)
        return table

    def phrases(self) -> list[tuple[tuple[str, ...], str]]:
        """(token sequence, label) for every label and alias, for mention finding in text."""
        out = []
        for label in self.labels:
            for alias in (label, *self.aliases.get(label, ())):
                toks = tuple(word_tokens(alias))
                if toks:
                    out.append((toks, label))
        return out


@dataclass(frozen=True)
class Vocabularies:
    """The three vocabularies a tagger and a caption share."""

    genres: Vocabulary
    moods: Vocabulary
    instruments: Vocabulary

    def __getitem__(self, kind: str) -> Vocabulary:
        if kind not in KINDS:
            raise KeyError(f"unknown tag kind {kind!r}; expected one of {KINDS}")
        return getattr(self, kind)

    def items(self) -> list[tuple[str, Vocabulary]]:
        return [(k, self[k]) for k in KINDS]

    def kind_of(self, label: str) -> str | None:
        """Which vocabulary a label belongs to (labels are unique across vocabularies)."""
        for kind, vocab in self.items():
            if label in vocab.labels:
                return kind
        return None


def parse_vocabulary(kind: str, text: str, source: str = "<string>") -> Vocabulary:
    """Parse a vocabulary file: `label | alias | alias` per line, `#` starts a comment."""
    labels: list[str] = []
    aliases: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("|")]
        label, rest = parts[0], [p for p in parts[1:] if p]
        if not label:
            raise ConfigError(f"{source}:{lineno}: empty label before '|'", key=source)
        if label in aliases:
            raise ConfigError(f"{source}:{lineno}: label {label!r} listed twice", key=source)
        labels.append(label)
        aliases[label] = tuple(rest)
    if not labels:
        raise ConfigError(f"{source} has no labels; write one label per line", key=source)
    return Vocabulary(kind=kind, labels=tuple(labels), aliases=aliases)


def load_vocabularies(directory: str | Path | None = None) -> Vocabularies:
    """Load genres.txt, moodtheme.txt and instruments.txt from `directory` (default: shipped configs/vocab)."""
    base = Path(directory) if directory else resource_dir("configs") / "vocab"
    vocabs = {}
    for kind, name in VOCAB_FILES.items():
        path = base / name
        if not path.is_file():
            raise ConfigError(
                f"vocabulary file {path} not found; tag.vocab_dir must hold {', '.join(VOCAB_FILES.values())}",
                key="tag.vocab_dir",
            )
        vocabs[kind] = parse_vocabulary(kind, path.read_text(encoding="utf-8"), source=str(path))
    out = Vocabularies(**vocabs)
    seen: dict[str, str] = {}
    for kind, vocab in out.items():
        for label in vocab.labels:
            if label in seen:
                raise ConfigError(
                    f"label {label!r} is in both the {seen[label]} and {kind} vocabularies; labels must be unique",
                    key="tag.vocab_dir",
                )
            seen[label] = kind
    return out


def find_mentions(text: str, vocabs: Vocabularies) -> list[tuple[str, str]]:
    """Every vocabulary label named in `text`, as (kind, label) in order of appearance.

    Longest phrase wins and consumes its words, so "electric piano" is one mention (not also
    "piano") and "drum and bass" is a genre, not drums plus bass.
    """
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for kind, vocab in vocabs.items():
        for toks, label in vocab.phrases():
            table.setdefault(toks, (kind, label))
    longest = max((len(t) for t in table), default=0)
    words = word_tokens(text)
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            hit = table.get(tuple(words[i : i + n]))
            if hit:
                found.append(hit)
                i += n
                break
        else:
            i += 1
    return found


def split_tag_field(value: object) -> list[str]:
    """A metadata tag field as a list of strings: lists pass through, strings split on , ; | and tabs."""
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in re.split(r"[,;|\t]", value) if p.strip()]
    if isinstance(value, Iterable):
        out: list[str] = []
        for item in value:
            out += split_tag_field(item)
        return out
    return [str(value)]


def unique(seq: Sequence[str]) -> list[str]:
    """Order-preserving de-duplication."""
    return list(dict.fromkeys(seq))

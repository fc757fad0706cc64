"""Captions: natural-language descriptions of a window written from its tags.

The default is a template grammar (sentence frames x synonyms x orderings), deterministic per window
and seed. Optionally a local causal LM rewrites the tags LP-MusicCaps style ("write a description
including these attributes"); its output is validated against the chosen tags and replaced by the
template caption when it names a tag that was not chosen, misses the chosen ones, or has the wrong length.
Artist and title are never given to either writer. The grammar's word lists are data, in
`configs/vocab/caption_words.yaml`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunekit.prep.vocab import KINDS, Vocabularies, find_mentions, unique, word_tokens
from tunekit.prep.rows import section_as

log = logging.getLogger(__name__)


@dataclass
class CaptionConfig:
    """Settings of the `caption` stage."""

    # Run the caption stage (false: the stage passes windows through untouched).
    enabled: bool = True
    # Captions written per window (variant 0 is `caption`, all are in `captions`).
    variants: int = 3
    # Seed of the template choices; with the window id it fixes every caption.
    seed: int = 0
    # Local transformers causal LM (hub id or path) that rewrites tags into captions; None = template only.
    llm: str | None = None
    # Most tokens the LM may generate per caption.
    llm_max_new_tokens: int = 96
    # Device for the LM: auto (cuda when available, else cpu) | cpu | cuda | cuda:N.
    device: str = "auto"
    # Fewest words a caption may have.
    min_words: int = 15
    # Most words a caption may have.
    max_words: int = 60
    # State the tempo in captions when it is confident.
    state_tempo: bool = True
    # State the key in captions when it is confident.
    state_key: bool = True

    def problems(self, key: str = "caption") -> list[str]:
        """Every invalid value, each naming its key; empty when valid."""
        out = []
        if self.variants < 1:
            out.append(f"{key}.variants={self.variants} must be >= 1")
        if self.min_words < 1 or self.max_words < self.min_words:
            out.append(
                f"{key}.min_words={self.min_words} and {key}.max_words={self.max_words} must satisfy "
                "1 <= min_words <= max_words"
            )
        elif self.max_words < 12:
            out.append(f"{key}.max_words={self.max_words} is too short for a caption; use at least 12")
        if self.llm_max_new_tokens < 8:
            out.append(f"{key}.llm_max_new_tokens={self.llm_max_new_tokens} must be >= 8")
        return out


# --------------------------------------------------------------------------------------------------
# Word lists (configs/vocab/caption_words.yaml)

WORDS_FILE = "caption_words.yaml"


@dataclass(frozen=True)
class CaptionWords:
    """The template grammar's word lists, in file order (the seeded choices depend on it)."""

    # Instrument label -> phrases; "{a}" is replaced by a describing adjective or nothing.
    instrument_phrases: dict[str, tuple[str, ...]]
    # Instrument label -> adjectives that may describe it.
    adjectives: dict[str, tuple[str, ...]]
    # Adjectives for an instrument without its own list.
    generic_adjectives: tuple[str, ...]
    # Mood label -> the word a caption uses for it.
    mood_words: dict[str, str]
    # Theme label -> what the music suits ("well suited to {phrase}").
    theme_phrases: dict[str, str]
    # Genre label -> nouns that follow it; "" leaves the genre alone.
    genre_nouns: dict[str, tuple[str, ...]]
    # Nouns after any other genre.
    default_nouns: tuple[str, ...]
    # Vocabulary words a caption may use in their everyday sense without claiming the tag.
    neutral_labels: frozenset[str]


@functools.cache
def caption_words() -> CaptionWords:
    """The shipped caption word lists (`configs/vocab/caption_words.yaml`), read once per process."""
    import yaml

    from tunekit.paths import resource_dir

    data = yaml.safe_load((resource_dir("configs") / "vocab" / WORDS_FILE).read_text(encoding="utf-8"))

    def lists(table: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
        return {label: tuple(words) for label, words in table.items()}

    return CaptionWords(
        instrument_phrases=lists(data["instrument_phrases"]),
        adjectives=lists(data["adjectives"]),
        generic_adjectives=tuple(data["generic_adjectives"]),
        mood_words=dict(data["mood_words"]),
        theme_phrases=dict(data["theme_phrases"]),
        genre_nouns=lists(data["genre_nouns"]),
        default_nouns=tuple(data["default_nouns"]),
        neutral_labels=frozenset(data["neutral_labels"]),
    )


def _rng(window_id: str, seed: int, salt: str) -> random.Random:
    """A generator fixed by (seed, window id, salt): stable across runs and processes (no salted hash())."""
    digest = hashlib.sha256(f"{seed}\x00{window_id}\x00{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _join(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _article(phrase: str) -> str:
    return "an" if re.match(r"[aeiou8]", phrase.strip().lower()) else "a"


def _clean(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"\b(a|an) (a|an) ", r"\2 ", text)
    return text.strip()


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def word_count(text: str) -> int:
    """Words in a caption (hyphenated words count once)."""
    return len(re.findall(r"[A-Za-z0-9][A-Za-z0-9'#&\-]*", text))


def _fix_articles(text: str) -> str:
    # Lowercase articles anywhere, capitalised ones only at a sentence start ("in A minor" is a key).
    def fix(m: re.Match[str]) -> str:
        return m.group(1) + ("n " if m.group(2).lower() in "aeiou8" else " ")

    text = re.sub(r"\b(a)n? (?=(\w))", fix, text)
    return re.sub(r"(?:^|(?<=[.!?] ))(A)n? (?=(\w))", fix, text)


@dataclass
class _Parts:
    """The pieces one caption variant is assembled from."""

    genre: str
    noun: str
    moods: list[str]
    themes: list[str]
    instruments: list[str]
    tempo: str
    key: str
    instrumental: bool
    dynamics: str


def caption_inputs(tags: Mapping[str, Any], *, state_tempo: bool = True, state_key: bool = True) -> dict[str, Any]:
    """The tags a caption may state: labels, confident tempo/key only, 'instrumental'; never artist/title."""
    instrumental = bool(tags.get("separated")) or bool(tags.get("instrumental"))
    instruments = [i for i in tags.get("instruments") or [] if not (instrumental and i == "voice")]
    bpm = tags.get("bpm")
    key = tags.get("key")
    return {
        "genres": list(tags.get("genres") or []),
        "moods": list(tags.get("moods") or []),
        "instruments": instruments,
        "bpm": float(bpm) if state_tempo and bpm is not None and not tags.get("bpm_uncertain", False) else None,
        "key": str(key) if state_key and key and not tags.get("key_uncertain", False) else None,
        "instrumental": instrumental,
        "loudness_range_lu": tags.get("loudness_range_lu"),
    }


def _instrument_phrase(label: str, rng: random.Random) -> str:
    words = caption_words()
    forms = words.instrument_phrases.get(label, ("{a} " + label,))
    form = rng.choice(forms)
    adj = rng.choice(words.adjectives.get(label, words.generic_adjectives)) if rng.random() < 0.6 else ""
    return _clean(form.replace("{a}", adj))


def _dynamics(lra: Any, rng: random.Random) -> str:
    if lra is None or not math.isfinite(float(lra)):
        return ""
    lra = float(lra)
    if lra < 5:
        return rng.choice(("The dynamics stay even throughout.", "Its level stays steady from start to finish."))
    if lra > 12:
        return rng.choice(("The dynamics rise and fall widely.", "Quiet and loud passages alternate."))
    return rng.choice(("The dynamics move moderately.", "It builds and eases at a moderate pace."))


def _tempo_key(p: _Parts, rng: random.Random, sentence: bool) -> str:
    if not p.tempo and not p.key:
        return ""
    if sentence:
        if p.tempo and p.key:
            return rng.choice((f"It moves at {p.tempo} in {p.key}.", f"The tempo sits {p.tempo} and the key is {p.key}.",
                               f"It is in {p.key}, at {p.tempo}."))  # fmt: skip
        if p.tempo:
            return rng.choice((f"It moves at {p.tempo}.", f"The tempo sits {p.tempo}."))
        return rng.choice((f"It is in {p.key}.", f"The key is {p.key}."))
    if p.tempo and p.key:
        return rng.choice((f"{p.tempo} in {p.key}", f"in {p.key} at {p.tempo}"))
    return p.tempo or f"in {p.key}"


def _frames(p: _Parts, rng: random.Random) -> list[Callable[[], str]]:
    """Sentence frames that can express these parts; each builds one caption."""
    moods = _join(p.moods)
    head = _clean(f"{moods} {'instrumental ' if p.instrumental and rng.random() < 0.5 else ''}{p.genre} {p.noun}")
    if not p.genre:
        noun = rng.choice(("piece of music", "track", "piece"))
        head = _clean(f"{moods} {'instrumental ' if p.instrumental else ''}{noun}")
    inst = _join(p.instruments)
    tk_inline = _tempo_key(p, rng, sentence=False)
    tk_sentence = _tempo_key(p, rng, sentence=True)

    def f_with() -> str:
        body = f"{_article(head)} {head}"
        body += f" with {inst}" if inst else ""
        return _cap(f"{body}{', ' + tk_inline if tk_inline else ''}.")

    def f_built() -> str:
        return _cap(f"Built on {inst}, this {head} {'runs at ' + p.tempo if p.tempo else 'unfolds'}"
                    f"{' in ' + p.key if p.key else ''}.")  # fmt: skip

    def f_features() -> str:
        verbs = ("features", "is carried by", "leans on") + (("brings together",) if len(p.instruments) > 1 else ())
        verb = rng.choice(verbs)
        return _cap(f"This {head} {verb} {inst}. {tk_sentence}")

    def f_mood() -> str:
        genre = f"{p.genre} {p.noun}".strip() or "piece"
        feel = f" with {_article(moods)} {moods} feel" if moods else ""
        lead = f"{_article(genre)} {genre}{feel}"
        return _cap(f"{lead}{', featuring ' + inst if inst else ''}. {tk_sentence}")

    def f_listen() -> str:
        return _cap(f"Listen for {inst} in this {head}{', ' + tk_inline if tk_inline else ''}.")

    def f_describe() -> str:
        lines = [f"This is {_article(head)} {head}."]
        if inst:
            lines.append(rng.choice((f"The arrangement features {inst}.", f"It features {inst}.",
                                     f"The instrumentation includes {inst}.")))  # fmt: skip
        lines.append(tk_sentence)
        return " ".join(lines)

    frames: list[Callable[[], str]] = [f_with, f_describe, f_mood]
    if inst:
        frames += [f_built, f_features, f_listen]
    return frames


def _assemble(p: _Parts, frame_index: int, rng: random.Random, min_words: int) -> str:
    frames = _frames(p, rng)
    text = frames[frame_index % len(frames)]()
    extras = []
    if p.themes:
        frame = rng.choice(("It is well suited to {t}.", "A good fit for {t}.", "It would suit {t}."))
        extras.append(frame.format(t=_join(p.themes)))
    if p.instrumental and "instrumental" not in text:
        extras.append(rng.choice(("The track is instrumental.", "It is fully instrumental.")))
    rng.shuffle(extras)
    text = " ".join([text, *extras])
    fillers = (
        p.dynamics,
        f"It is a clear example of {p.genre}." if p.genre else "",
        "This excerpt comes from a longer recording.",
        "It is offered here as an untitled musical excerpt.",
    )
    for filler in fillers:
        if word_count(text) >= min_words:
            break
        if filler:
            text = f"{text} {filler}"
    return _fix_articles(_clean(text))


def template_captions(
    tags: Mapping[str, Any],
    window_id: str,
    n: int = 3,
    seed: int = 0,
    *,
    state_tempo: bool = True,
    state_key: bool = True,
    min_words: int = 15,
    max_words: int = 60,
) -> list[str]:
    """`n` different captions for one window's tags, the same for the same (tags, window_id, seed).

    Each variant uses a different sentence frame where possible; instruments, moods and their order,
    adjectives and phrasings are drawn per variant. Tempo and key appear only when confident.
    """
    src = caption_inputs(tags, state_tempo=state_tempo, state_key=state_key)
    order_rng = _rng(window_id, seed, "frames")
    frame_order = list(range(6))
    order_rng.shuffle(frame_order)
    captions: list[str] = []
    for variant in range(n):
        text = ""
        for attempt in range(8):
            rng = _rng(window_id, seed, f"variant{variant}/{attempt}")
            text = _variant(src, rng, frame_order[(variant + attempt) % len(frame_order)], min_words, max_words)
            if text not in captions:
                break
        captions.append(text)
    return captions


def _variant(src: Mapping[str, Any], rng: random.Random, frame: int, min_words: int, max_words: int) -> str:
    words = caption_words()
    genres = src["genres"]
    genre = genres[0] if genres else ""
    nouns = words.genre_nouns.get(genre, words.default_nouns)
    mood_labels = [m for m in src["moods"] if m not in words.theme_phrases]
    theme_labels = [m for m in src["moods"] if m in words.theme_phrases]
    rng.shuffle(mood_labels)
    rng.shuffle(theme_labels)
    instruments = list(src["instruments"])
    rng.shuffle(instruments)
    bpm, key = src["bpm"], src["key"]
    tempo = ""
    if bpm is not None:
        tempo = rng.choice(("around {b} BPM", "about {b} BPM", "roughly {b} BPM")).format(b=int(round(bpm)))
    n_inst, n_mood, n_theme = 4, 3, 2
    text = ""
    while True:
        parts = _Parts(
            genre=genre,
            noun=rng.choice(nouns),
            moods=[words.mood_words.get(m, m) for m in mood_labels[:n_mood]],
            themes=[words.theme_phrases[t] for t in theme_labels[:n_theme]],
            instruments=[_instrument_phrase(i, rng) for i in instruments[:n_inst]],
            tempo=tempo,
            key=key or "",
            instrumental=src["instrumental"],
            dynamics=_dynamics(src.get("loudness_range_lu"), rng),
        )
        text = _assemble(parts, frame, rng, min_words)
        if word_count(text) <= max_words or (n_inst <= 1 and n_mood <= 1 and n_theme == 0):
            return text
        # Too long: say less, dropping themes first, then extra moods, then extra instruments.
        if n_theme > 0:
            n_theme -= 1
        elif n_mood > 1:
            n_mood -= 1
        else:
            n_inst = max(1, n_inst - 1)


# --------------------------------------------------------------------------------------------------
# Validation


def _covered(label: str, chosen_labels: Sequence[str]) -> bool:
    """Whether `label`'s words lie inside a chosen label ("guitar" in "electric guitar", "bass" in "drum and bass")."""
    toks = word_tokens(label)
    for other in chosen_labels:
        o = word_tokens(other)
        if any(o[i : i + len(toks)] == toks for i in range(len(o) - len(toks) + 1)):
            return True
    return False


def required_mentions(n: int) -> int:
    """How many of n chosen moods (or instruments) a caption must name: two thirds rounded up, at most 3."""
    return min(math.ceil(2 * n / 3), 3)


_KEY_RE = re.compile(r"\b([A-G](?:#|b|♯|♭)?)\s+(major|minor)\b")
_BPM_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:bpm|beats per minute)", re.IGNORECASE)


def validate_caption(
    text: str,
    chosen: Mapping[str, Sequence[str]],
    vocab: Vocabularies,
    *,
    min_words: int = 15,
    max_words: int = 60,
    bpm: float | None = None,
    key: str | None = None,
    forbidden: Sequence[str] = (),
) -> list[str]:
    """Problems with a caption for the chosen tags ({"genres", "moods", "instruments"}); empty = valid.

    It must name the main genre and two thirds (at most three) of the chosen moods and of the instruments
    (plural and alias matching), name no vocabulary label that was not chosen (a word inside a chosen label, such
    as "guitar" for "electric guitar", is fine), state no other tempo or key than the given ones, contain
    none of `forbidden` (artist, title), and have min_words..max_words words.
    """
    problems: list[str] = []
    n = word_count(text)
    if not min_words <= n <= max_words:
        problems.append(f"has {n} words, outside {min_words}..{max_words}")
    mentions = find_mentions(text, vocab)
    named = {kind: {label for k, label in mentions if k == kind} for kind in KINDS}
    all_chosen = [label for kind in KINDS for label in chosen.get(kind, ())]
    genres = list(chosen.get("genres", ()))
    if genres and genres[0] not in named["genres"]:
        problems.append(f"does not name the genre {genres[0]!r}")
    for kind in ("moods", "instruments"):
        want = list(chosen.get(kind, ()))
        got = [label for label in want if label in named[kind]]
        if len(got) < required_mentions(len(want)):
            missing = [label for label in want if label not in got]
            problems.append(f"names {len(got)} of {len(want)} {kind} (missing {', '.join(missing)})")
    for kind, label in dict.fromkeys(mentions):
        if label in chosen.get(kind, ()) or label in caption_words().neutral_labels or _covered(label, all_chosen):
            continue
        problems.append(f"names {kind[:-1]} {label!r}, which was not chosen")
    for match in _BPM_RE.finditer(text):
        if bpm is None or abs(float(match.group(1)) - bpm) > 1.0:
            problems.append(f"states a tempo of {match.group(1)} BPM" + ("" if bpm is None else f" (tagged {bpm:.0f})"))
    for match in _KEY_RE.finditer(text):
        stated = f"{match.group(1).replace('♯', '#').replace('♭', 'b')} {match.group(2)}"
        if key is None or stated.lower() != key.lower():
            problems.append(f"states the key {stated!r}" + ("" if key is None else f" (tagged {key!r})"))
    low = text.lower()
    for name in forbidden:
        if name and re.search(r"(?<!\w)" + re.escape(name.lower()) + r"(?!\w)", low):
            problems.append(f"names {name!r} (artist or title)")
    return problems


# --------------------------------------------------------------------------------------------------
# Optional LLM rewriting

LLM_INSTRUCTION = (
    "Write a description of a piece of music in one or two sentences that includes the following attributes. "
    "{attributes}. Use between {min_words} and {max_words} words. Do not mention any other genre, mood or "
    "instrument, and do not name an artist or a song title."
)


def llm_prompt(src: Mapping[str, Any], min_words: int = 15, max_words: int = 60) -> str:
    """LP-MusicCaps-style "writing" instruction listing the caption inputs (see `caption_inputs`)."""
    attrs = []
    if src["genres"]:
        attrs.append("genre: " + ", ".join(src["genres"]))
    if src["moods"]:
        attrs.append("mood: " + ", ".join(src["moods"]))
    if src["instruments"]:
        attrs.append("instruments: " + ", ".join(src["instruments"]))
    if src["bpm"] is not None:
        attrs.append(f"tempo: {int(round(src['bpm']))} BPM")
    if src["key"]:
        attrs.append(f"key: {src['key']}")
    if src["instrumental"]:
        attrs.append("instrumental (no vocals)")
    return LLM_INSTRUCTION.format(attributes="; ".join(attrs) or "music", min_words=min_words, max_words=max_words)


def clean_llm_output(text: str) -> str:
    """The first paragraph of generated text, without a leading label or surrounding quotes."""
    text = text.strip().split("\n\n", 1)[0].strip()
    text = re.sub(r"^(description|caption)\s*:\s*", "", text, flags=re.IGNORECASE)
    return text.strip().strip('"').strip()


def load_caption_llm(name_or_path: str, *, cache_dir: str | None = None, device: str | None = None) -> tuple[Any, Any]:
    """A local transformers causal LM and its tokenizer (AutoModelForCausalLM + AutoTokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunekit.errors import ConfigError, TunekitError
    from tunekit.models.hub import loading

    try:
        with loading(name_or_path):
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, cache_dir=cache_dir)
            model = AutoModelForCausalLM.from_pretrained(name_or_path, cache_dir=cache_dir)
    except TunekitError as e:
        raise ConfigError(f"caption.llm={name_or_path!r}: {e}", key="caption.llm") from e
    model.eval()
    if device:
        model.to(device)
    return model, tokenizer


def make_llm_generate(model: Any, tokenizer: Any, max_new_tokens: int = 96) -> Callable[[str, int], str]:
    """A `generate(instruction, seed) -> text` function over a causal LM (chat template when it has one)."""
    import torch

    def generate(instruction: str, seed: int) -> str:
        if getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}], add_generation_prompt=True, tokenize=False
            )
        else:
            prompt = f"{instruction}\nDescription:"
        enc = tokenizer(prompt, return_tensors="pt").to(model.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.95, pad_token_id=pad
            )
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def llm_captions(
    tags: Mapping[str, Any],
    window_id: str,
    cfg: CaptionConfig,
    vocab: Vocabularies,
    generate: Callable[[str, int], str],
    model_name: str,
    forbidden: Sequence[str] = (),
) -> tuple[list[str], list[str], list[list[str]]]:
    """LM captions for `cfg.variants` variants, each validated; a failing one becomes the template's.

    Returns (captions, sources, problems per variant); a source is "llm:<model_name>" or "template".
    """
    src = caption_inputs(tags, state_tempo=cfg.state_tempo, state_key=cfg.state_key)
    fallback = template_captions(tags, window_id, cfg.variants, cfg.seed, state_tempo=cfg.state_tempo,
                                 state_key=cfg.state_key, min_words=cfg.min_words, max_words=cfg.max_words)  # fmt: skip
    instruction = llm_prompt(src, cfg.min_words, cfg.max_words)
    chosen = {k: src[k] for k in KINDS}
    captions, sources, problems = [], [], []
    for variant in range(cfg.variants):
        seed = _rng(window_id, cfg.seed, f"llm{variant}").getrandbits(31)
        text = clean_llm_output(generate(instruction, seed))
        found = validate_caption(text, chosen, vocab, min_words=cfg.min_words, max_words=cfg.max_words,
                                 bpm=src["bpm"], key=src["key"], forbidden=forbidden)  # fmt: skip
        if not text:
            found = ["empty output"]
        if found:
            captions.append(fallback[variant])
            sources.append("template")
        else:
            captions.append(text)
            sources.append(f"llm:{model_name}")
        problems.append(found)
    return captions, sources, problems


def audiocraft_fields(tags: Mapping[str, Any], caption: str) -> dict[str, Any]:
    """audiocraft's per-file metadata fields: `instrument` is a comma-joined string, never a list."""
    src = caption_inputs(tags)
    return {
        "description": caption,
        "genre": src["genres"][0] if src["genres"] else "",
        "moods": list(src["moods"]),
        "keywords": unique([*src["genres"], *src["moods"], *src["instruments"]]),
        "instrument": ", ".join(src["instruments"]),
        "bpm": src["bpm"],
        "key": src["key"],
    }


# --------------------------------------------------------------------------------------------------
# Prep stage `caption` (window stage, after `tag`)

# Tag sources whose labels come from a random model (models=tiny): recorded, never captioned.
RANDOM_SOURCES = frozenset({"clap:tiny"})
_loaded_llm: dict[tuple[Any, ...], Callable[[str, int], str]] = {}
_logged_exclusion = False


def as_caption_config(section: Any) -> tuple[CaptionConfig, str | None]:
    """(CaptionConfig, tag vocab_dir) from the stage section: a CaptionConfig, or a dict {caption, tag}."""
    vocab_dir = None
    if isinstance(section, Mapping) and "caption" in section:
        tag = section.get("tag")
        vocab_dir = tag.get("vocab_dir") if isinstance(tag, Mapping) else getattr(tag, "vocab_dir", None)
        section = section["caption"]
    return section_as(CaptionConfig, section), vocab_dir


def caption_tags(extra: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A window's tag columns minus labels from random (tiny) models; returns (tags, excluded labels)."""
    import json

    sources = json.loads(extra.get("tag_sources") or "{}")
    excluded = sorted(label for label, src in sources.items() if src in RANDOM_SOURCES)
    tags = dict(extra)
    for kind in KINDS:
        tags[kind] = [label for label in extra.get(kind) or [] if label not in excluded]
    return tags, excluded


def caption_model_digest(section: Any, models: Any) -> str:
    """Digest of the caption LM's files ("" for template captions)."""
    cfg, _ = as_caption_config(section)
    if not cfg.llm:
        return ""
    from tunekit.models.digest import model_digest

    return model_digest(cfg.llm)


def _llm_generate(cfg: CaptionConfig) -> Callable[[str, int], str]:
    from tunekit.models.device import resolve_device

    key = (cfg.llm, cfg.llm_max_new_tokens, cfg.device)
    if key not in _loaded_llm:
        model, tokenizer = load_caption_llm(str(cfg.llm), device=resolve_device(cfg.device))
        _loaded_llm[key] = make_llm_generate(model, tokenizer, cfg.llm_max_new_tokens)
    return _loaded_llm[key]


def caption_window(row: Any, section: Any, ctx: Any) -> Any:
    """Write `caption`, `captions`, `caption_source` and the audiocraft fields of one tagged window."""
    import dataclasses

    from tunekit.prep.vocab import load_vocabularies

    global _logged_exclusion
    cfg, vocab_dir = as_caption_config(section)
    if not cfg.enabled:
        return row
    tags, excluded = caption_tags(row.extra)
    if excluded and not _logged_exclusion:
        log.info("models=tiny: CLAP tags come from a random model; captions use DSP and metadata tags only "
                 "(the CLAP tags stay recorded in tag_sources as %s)", sorted(RANDOM_SOURCES))  # fmt: skip
        _logged_exclusion = True
    if cfg.llm:
        captions, sources, problems = llm_captions(
            tags, row.window_id, cfg, load_vocabularies(vocab_dir), _llm_generate(cfg), str(cfg.llm)
        )
        for variant, found in enumerate(problems):
            if found:
                log.debug("window %s caption %d: LM output rejected (%s)", row.window_id, variant, "; ".join(found))
    else:
        captions = template_captions(tags, row.window_id, cfg.variants, cfg.seed, state_tempo=cfg.state_tempo,
                                     state_key=cfg.state_key, min_words=cfg.min_words, max_words=cfg.max_words)  # fmt: skip
        sources = ["template"] * len(captions)
    extra = dict(row.extra)
    extra.update(audiocraft_fields(tags, captions[0]))
    extra.update(caption=captions[0], captions=captions, caption_source=sources[0], caption_sources=sources)
    return dataclasses.replace(row, extra=extra)

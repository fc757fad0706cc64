"""Tagging: tempo, key, danceability and loudness range with Essentia; genre, mood and instrument tags
from corpus metadata, CLAP zero-shot and (optionally) Essentia's discogs-effnet heads.

Core functions work on numpy arrays and plain values (`essentia_features`, `window_dsp_tags`,
`metadata_tags`, `clap_zero_shot`, `merge_tags`); the prep stage adapters at the end of the file are thin.

Track and window rule: the whole-track estimate is usually more reliable than a 30 s window's. A track
tempo is confident at `tempo_min_confidence`, or at the lower `tempo_confirm_confidence` when its windows
agree with it (`tempo_confirmed`). A window takes a confident track tempo unless its own estimate is
confident, differs from the track's by more than 4 % and is not an octave of it, and is at least as
confident (a real tempo change). A window always takes a confident track key (key changes are rare and
a window's key is the less reliable one). When the track value is uncertain a window uses its own if
that is confident. A value below its threshold is kept as an estimate (`bpm_estimate`, `key_estimate`)
but `bpm`/`key` are null and flagged uncertain, so captions never state it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit.errors import ConfigError, MissingDependencyError, StageUnavailableError
from tunekit.prep.vocab import KINDS, Vocabularies, split_tag_field, unique
from tunekit.prep.rows import models_settings, section_as

log = logging.getLogger(__name__)

ESSENTIA_RATE = 44100
TEMPO_TOLERANCE = 0.04  # relative tempo difference still counted as the same tempo
KEY_PROFILES = (
    "bgate", "edma", "edmm", "temperley", "temperley2005", "krumhansl", "diatonic", "weichai", "tonictriad",
    "thpcp", "shaath", "gomez", "noland", "faraldo", "pentatonic", "braw",
)  # fmt: skip

# Prompt ensembles per vocabulary: CLAP text embeddings are averaged over these templates.
CLAP_PROMPTS: dict[str, tuple[str, ...]] = {
    "genres": ("This is a {label} track.", "{label} music"),
    "moods": ("This is {label} music.", "music with a {label} mood"),
    "instruments": ("This track features {label}.", "music played on {label}"),
}
EFFNET_LICENSE_WARNING = (
    "the Essentia discogs-effnet models are licensed CC BY-NC-SA 4.0 (non-commercial): tags they produce "
    "may not be usable for a commercial model"
)


@dataclass
class TagConfig:
    """Settings of the `tag` stage (Essentia DSP features and semantic tags)."""

    # Run the tagging stage (false: the stage passes windows through untouched).
    enabled: bool = True
    # Minimum RhythmExtractor2013 multifeature confidence (0-5.32) for a tempo to be stated.
    tempo_min_confidence: float = 3.5
    # Lower confidence at which a track tempo is still stated when its windows agree with it.
    tempo_confirm_confidence: float = 1.5
    # Essentia KeyExtractor profile: bgate, edma, edmm, temperley, krumhansl, ...
    key_profile: str = "bgate"
    # Minimum KeyExtractor strength (0-1) for a key to be stated (noise scores about 0.6-0.7).
    key_min_strength: float = 0.75
    # Zero-shot genre/mood/instrument tags with CLAP.
    clap: bool = True
    # CLAP checkpoint (hub id or local path) for zero-shot tags.
    clap_model: str = "laion/larger_clap_music"
    # Minimum softmax probability (over one vocabulary, CLAP's logit scale) for a zero-shot tag.
    clap_threshold: float = 0.1
    # Most genres CLAP may add.
    clap_top_k_genres: int = 1
    # Most moods/themes CLAP may add.
    clap_top_k_moods: int = 3
    # Most instruments CLAP may add.
    clap_top_k_instruments: int = 4
    # CLAP analysis window in seconds; a window's audio is cut into these and the embeddings averaged.
    clap_window_seconds: float = 10.0
    # Device for CLAP: auto (cuda when available, else cpu) | cpu | cuda | cuda:N.
    device: str = "auto"
    # Folder with Essentia discogs-effnet .pb/.json files (needs the essentia-tensorflow wheel; CC BY-NC-SA).
    effnet_models_dir: str | None = None
    # Minimum sigmoid probability for an effnet tag.
    effnet_threshold: float = 0.1
    # Map the corpus metadata fields `genre` and `tags` onto the vocabularies (trusted first).
    metadata_tags: bool = True
    # Folder with genres.txt, moodtheme.txt, instruments.txt; None uses the shipped configs/vocab.
    vocab_dir: str | None = None

    def problems(self, key: str = "tag") -> list[str]:
        """Every invalid value, each naming its key; empty when valid."""
        out = []
        if self.key_profile not in KEY_PROFILES:
            profiles = ", ".join(KEY_PROFILES)
            out.append(f"{key}.key_profile={self.key_profile!r} is not an Essentia key profile; use one of {profiles}")
        for name in ("tempo_min_confidence", "tempo_confirm_confidence"):
            if not 0 <= getattr(self, name) <= 5.32:
                out.append(f"{key}.{name}={getattr(self, name)} must be within 0..5.32")
        for name in ("key_min_strength", "clap_threshold", "effnet_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{key}.{name}={getattr(self, name)} must be within 0..1")
        for kind, k in self.top_k().items():
            if k < 0:
                out.append(f"{key}.clap_top_k_{kind}={k} must be >= 0")
        if self.clap_window_seconds <= 0:
            out.append(f"{key}.clap_window_seconds={self.clap_window_seconds} must be > 0")
        return out

    def top_k(self) -> dict[str, int]:
        """Most CLAP (or effnet) labels per vocabulary."""
        return {
            "genres": self.clap_top_k_genres,
            "moods": self.clap_top_k_moods,
            "instruments": self.clap_top_k_instruments,
        }


# --------------------------------------------------------------------------------------------------
# Essentia DSP


def _essentia() -> Any:
    try:
        import essentia

        # Silenced before essentia.standard is imported: that import logs an [ INFO ] line per process.
        essentia.log.infoActive = False
        essentia.log.warningActive = False
        import essentia.standard as es
    except ImportError as e:
        raise MissingDependencyError("essentia", purpose="tempo/key tagging") from e
    return es


def _to_rate(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """(C, N) float32 audio resampled to `target` with soxr (no-op when already there)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None, :]
    if rate == target:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio.T, rate, target, quality="HQ").T, dtype=np.float32)


def essentia_features(audio: np.ndarray, rate: int, key_profile: str = "bgate") -> dict[str, Any]:
    """Tempo (with confidence), key (with strength), danceability and loudness range of (C, N) audio.

    Runs at 44.1 kHz: RhythmExtractor2013 multifeature, KeyExtractor, Danceability on the mono mix,
    LoudnessEBUR128 on the stereo signal. Values that cannot be measured (silence, too short) are None.
    """
    es = _essentia()
    x = _to_rate(audio, rate, ESSENTIA_RATE)
    stereo = np.stack([x[0], x[0]]) if x.shape[0] == 1 else x[:2]
    mono = np.ascontiguousarray(stereo.mean(axis=0), dtype=np.float32)
    out: dict[str, Any] = {
        "bpm": None, "bpm_confidence": 0.0, "key": None, "key_strength": 0.0,
        "danceability": None, "loudness_range_lu": None,
    }  # fmt: skip
    seconds = mono.size / ESSENTIA_RATE
    if seconds < 1.0 or float(np.sqrt(np.mean(mono.astype(np.float64) ** 2))) < 1e-5:
        return out
    bpm, _beats, confidence, _estimates, _intervals = es.RhythmExtractor2013(method="multifeature")(mono)
    if np.isfinite(bpm) and bpm > 0:
        out["bpm"] = round(float(bpm), 2)
        out["bpm_confidence"] = round(float(confidence), 3)
    key, scale, strength = es.KeyExtractor(profileType=key_profile, sampleRate=ESSENTIA_RATE)(mono)
    if key and np.isfinite(strength):
        out["key"] = f"{key} {scale}"
        out["key_strength"] = round(float(strength), 4)
    out["danceability"] = round(float(es.Danceability(sampleRate=ESSENTIA_RATE)(mono)[0]), 4)
    if seconds >= 3.0:
        lra = es.LoudnessEBUR128(sampleRate=ESSENTIA_RATE)(np.ascontiguousarray(stereo.T, dtype=np.float32))[3]
        out["loudness_range_lu"] = round(float(lra), 3)
    return out


def same_tempo(a: float, b: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether two tempi agree within `tolerance` (relative)."""
    return abs(a - b) <= tolerance * b


def octave_related(a: float, b: float, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether `a` is a half/double/third/triple of `b` (the usual tempo octave errors)."""
    return any(same_tempo(a, b * f, tolerance) for f in (0.5, 2.0, 1 / 3, 3.0, 2 / 3, 1.5))


def tempo_confirmed(track: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], cfg: TagConfig) -> bool:
    """Whether a track's windows confirm its tempo estimate.

    Needs two or more windows with a tempo, every one within 4 % of the track tempo or an octave of it,
    at least half within 4 %, and a track confidence of at least `tempo_confirm_confidence`.
    """
    bpm = track.get("bpm")
    if bpm is None or float(track.get("bpm_confidence") or 0.0) < cfg.tempo_confirm_confidence:
        return False
    tempi = [float(w["bpm"]) for w in windows if w.get("bpm") is not None]
    same = sum(same_tempo(t, bpm) for t in tempi)
    consistent = all(same_tempo(t, bpm) or octave_related(t, bpm) for t in tempi)
    return len(tempi) >= 2 and consistent and 2 * same >= len(tempi)


def dsp_tags(features: Mapping[str, Any], cfg: TagConfig, *, confirmed: bool = False) -> dict[str, Any]:
    """Essentia features as tag columns: `bpm`/`key` only when confident, estimates and flags always.

    A tempo is confident at `tempo_min_confidence`, or at `tempo_confirm_confidence` when `confirmed`
    (see `tempo_confirmed`); a key at `key_min_strength`.
    """
    bpm, conf = features.get("bpm"), float(features.get("bpm_confidence") or 0.0)
    key, strength = features.get("key"), float(features.get("key_strength") or 0.0)
    floor = cfg.tempo_confirm_confidence if confirmed else cfg.tempo_min_confidence
    bpm_ok = bpm is not None and conf >= floor
    key_ok = key is not None and strength >= cfg.key_min_strength
    return {
        "bpm": bpm if bpm_ok else None,
        "bpm_estimate": bpm,
        "bpm_confidence": conf,
        "bpm_uncertain": not bpm_ok,
        "key": key if key_ok else None,
        "key_estimate": key,
        "key_strength": strength,
        "key_uncertain": not key_ok,
        "danceability": features.get("danceability"),
        "loudness_range_lu": features.get("loudness_range_lu"),
    }


def track_dsp_tags(track: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], cfg: TagConfig) -> dict[str, Any]:
    """A track's tag columns from its whole-track features, its tempo confirmed by its windows' features."""
    return dsp_tags(track, cfg, confirmed=tempo_confirmed(track, windows, cfg))


def window_dsp_tags(window: Mapping[str, Any], track: Mapping[str, Any] | None, cfg: TagConfig) -> dict[str, Any]:
    """A window's tag columns from its own features and its track's tag columns (see the module docstring).

    `window` is an `essentia_features` output; `track` a `track_dsp_tags` output, or None.
    """
    own = dsp_tags(window, cfg)
    if track is None:
        return own
    out = dict(own)
    if not track["bpm_uncertain"]:
        tb = track["bpm"]
        change = (not own["bpm_uncertain"] and not same_tempo(own["bpm"], tb) and not octave_related(own["bpm"], tb)
                  and own["bpm_confidence"] >= track["bpm_confidence"])  # fmt: skip
        if not change:
            out.update(bpm=tb, bpm_confidence=track["bpm_confidence"], bpm_uncertain=False)
    if not track["key_uncertain"]:
        out.update(key=track["key"], key_strength=track["key_strength"], key_uncertain=False)
    return out


# --------------------------------------------------------------------------------------------------
# Metadata tags

_PREFIXES = {"genre": "genres", "mood/theme": "moods", "mood": "moods", "theme": "moods", "instrument": "instruments"}


def metadata_tags(genre: object, tags: object, vocabs: Vocabularies) -> dict[str, list[str]]:
    """Corpus metadata mapped onto the vocabularies.

    `genre` (string or list) is matched against genres only; each entry of `tags` goes to the vocabulary its
    Jamendo-style prefix names (`genre---rock`, `mood/theme---happy`, `instrument---piano`) or, unprefixed,
    to the first vocabulary that knows it. Anything that matches no vocabulary is dropped (free-form tags
    can carry names that must not reach a caption).
    """
    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for raw in split_tag_field(genre):
        raw = raw.split("---", 1)[1] if "---" in raw else raw
        if label := vocabs.genres.match(raw):
            out["genres"].append(label)
    for raw in split_tag_field(tags):
        kinds: Sequence[str] = KINDS
        if "---" in raw:
            prefix, raw = raw.split("---", 1)
            kind = _PREFIXES.get(prefix.strip().lower())
            if kind is None:
                continue
            kinds = (kind,)
        for kind in kinds:
            if label := vocabs[kind].match(raw):
                out[kind].append(label)
                break
    return {k: unique(v) for k, v in out.items()}


def merge_tags(
    metadata: Mapping[str, Sequence[str]],
    predictions: Sequence[tuple[str, Mapping[str, Sequence[tuple[str, float]]]]] = (),
    top_k: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Merge tags by trust: metadata first, then each (source, {kind: [(label, score)]}) in order.

    A genre from metadata is final (predicted genres are not added to it); predicted moods and
    instruments are added after the metadata ones, at most `top_k[kind]` predicted labels per kind.
    Returns {"genres", "moods", "instruments", "tag_sources": {label: source}}.
    """
    out: dict[str, Any] = {k: [] for k in KINDS}
    sources: dict[str, str] = {}
    for kind in KINDS:
        for label in metadata.get(kind, ()):
            if label not in sources:
                out[kind].append(label)
                sources[label] = "metadata"
        if kind == "genres" and out[kind]:
            continue
        limit = None if top_k is None else top_k.get(kind)
        added = 0
        for source, preds in predictions:
            for label, _score in preds.get(kind, ()):
                if limit is not None and added >= limit:
                    break
                if label not in sources:
                    out[kind].append(label)
                    sources[label] = source
                    added += 1
    out["tag_sources"] = sources
    return out


# --------------------------------------------------------------------------------------------------
# CLAP zero-shot


def _mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def clap_embedder(model: Any, processor: Any, window_seconds: float = 10.0, model_id: str = "clap") -> Any:
    """The evaluation's CLAP embedder (`tunekit.eval.embeddings.ClapEmbedder`) with this window length.

    Tagging and the CLAP score share one window policy: mono, 48 kHz, non-overlapping windows, a final
    partial window kept when at least half a window long.
    """
    from tunekit.eval.embeddings import ClapEmbedder

    device = str(next(model.parameters()).device)
    embedder = ClapEmbedder(model, processor, model_id, fingerprint="", device=device)
    embedder.window = int(round(window_seconds * embedder.sample_rate))
    return embedder


def clap_audio_embedding(
    audio: np.ndarray, rate: int, model: Any, processor: Any, window_seconds: float = 10.0, batch_size: int = 8
) -> np.ndarray:
    """One unit-norm CLAP embedding for (C, N) audio: the normalised mean of its window embeddings."""
    embedder = clap_embedder(model, processor, window_seconds)
    windows = embedder.windows(audio, rate)
    if not windows:
        raise ValueError("cannot embed empty audio with CLAP")
    vectors = np.concatenate(
        [embedder.embed_windows(windows[i : i + batch_size]) for i in range(0, len(windows), batch_size)]
    )
    mean = vectors.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def clap_text_embeddings(labels: Sequence[str], prompts: Sequence[str], model: Any, processor: Any) -> np.ndarray:
    """(len(labels), D) unit-norm text embeddings, each the normalised mean over the prompt templates."""
    texts = [p.format(label=label) for label in labels for p in prompts]
    emb = clap_embedder(model, processor).embed_texts(texts)
    emb = emb.reshape(len(labels), len(prompts), -1).mean(axis=1)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def clap_logit_scale(model: Any) -> float:
    """CLAP's learned audio-to-text temperature (exp of `logit_scale_a`)."""
    return float(model.logit_scale_a.detach().exp().cpu())


def clap_probabilities(audio_emb: np.ndarray, text_emb: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over one vocabulary of CLAP's scaled cosine similarities (audio vs each label's text)."""
    logits = logit_scale * (text_emb @ audio_emb)
    p = np.exp(logits - logits.max())
    return p / p.sum()


def select_labels(
    scores: Sequence[float], labels: Sequence[str], top_k: int, threshold: float
) -> list[tuple[str, float]]:
    """The `top_k` best labels whose score is at least `threshold`, best first, as [(label, score)]."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(labels[i], round(float(scores[i]), 4)) for i in order if scores[i] >= threshold and scores[i] > 0]


def clap_zero_shot(
    audio: np.ndarray,
    rate: int,
    model: Any,
    processor: Any,
    vocab: Sequence[str],
    top_k: int,
    threshold: float,
    *,
    prompts: Sequence[str] = CLAP_PROMPTS["genres"],
    window_seconds: float = 10.0,
) -> list[tuple[str, float]]:
    """Zero-shot tags for (C, N) audio: labels of `vocab` ranked by CLAP, as [(label, probability)]."""
    audio_emb = clap_audio_embedding(audio, rate, model, processor, window_seconds)
    text_emb = clap_text_embeddings(list(vocab), prompts, model, processor)
    probs = clap_probabilities(audio_emb, text_emb, clap_logit_scale(model))
    return select_labels(probs, list(vocab), top_k, threshold)


class ClapTagger:
    """CLAP zero-shot over all three vocabularies, with the text embeddings computed once."""

    def __init__(self, model: Any, processor: Any, vocabs: Vocabularies, cfg: TagConfig) -> None:
        self.model, self.processor, self.cfg = model, processor, cfg
        self.labels = {kind: list(vocab.labels) for kind, vocab in vocabs.items()}
        self.text = {
            kind: clap_text_embeddings(self.labels[kind], CLAP_PROMPTS[kind], model, processor) for kind in KINDS
        }
        self.logit_scale = clap_logit_scale(model)

    def scores(self, audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Per vocabulary, the probability of each label (softmax over that vocabulary)."""
        emb = clap_audio_embedding(audio, rate, self.model, self.processor, self.cfg.clap_window_seconds)
        return {kind: clap_probabilities(emb, self.text[kind], self.logit_scale) for kind in KINDS}

    def __call__(self, audio: np.ndarray, rate: int) -> dict[str, list[tuple[str, float]]]:
        """Per vocabulary, the selected [(label, probability)] (threshold and top-k from the config)."""
        scores = self.scores(audio, rate)
        return {
            kind: select_labels(scores[kind], self.labels[kind], self.cfg.top_k()[kind], self.cfg.clap_threshold)
            for kind in KINDS
        }


# --------------------------------------------------------------------------------------------------
# Essentia TensorFlow (discogs-effnet) heads

EFFNET_EMBEDDING = "discogs-effnet-bs64-1"
EFFNET_HEADS = {
    "genres": "genre_discogs400-discogs-effnet-1",
    "moods": "mtg_jamendo_moodtheme-discogs-effnet-1",
    "instruments": "mtg_jamendo_instrument-discogs-effnet-1",
}


class EffnetTagger:
    """Essentia's discogs-effnet embedding plus the genre / mood-theme / instrument heads (16 kHz input).

    Needs the `essentia-tensorflow` wheel and the .pb models with their .json metadata in one folder.
    The models are CC BY-NC-SA: a warning is logged when they are loaded.
    """

    def __init__(self, models_dir: str | Path, vocabs: Vocabularies, cfg: TagConfig) -> None:
        import json

        es = _essentia()
        if not hasattr(es, "TensorflowPredictEffnetDiscogs"):
            raise StageUnavailableError(
                "tag.effnet_models_dir is set but the installed essentia has no TensorFlow support; "
                "install essentia-tensorflow (it replaces essentia) or set tag.effnet_models_dir=null"
            )
        base = Path(models_dir)
        names = [EFFNET_EMBEDDING, *EFFNET_HEADS.values()]
        missing = [f"{n}.pb" for n in names if not (base / f"{n}.pb").is_file()]
        missing += [f"{n}.json" for n in EFFNET_HEADS.values() if not (base / f"{n}.json").is_file()]
        if missing:
            raise StageUnavailableError(f"tag.effnet_models_dir={base} lacks {', '.join(missing)}")
        log.warning(EFFNET_LICENSE_WARNING)
        self.cfg, self.vocabs = cfg, vocabs
        self.embedder = es.TensorflowPredictEffnetDiscogs(
            graphFilename=str(base / f"{EFFNET_EMBEDDING}.pb"), output="PartitionedCall:1"
        )
        self.heads: dict[str, tuple[Any, list[str]]] = {}
        for kind, name in EFFNET_HEADS.items():
            meta = json.loads((base / f"{name}.json").read_text())
            schema = meta.get("schema", {})
            inp = (schema.get("inputs") or [{}])[0].get("name", "model/Placeholder")
            outs = schema.get("outputs") or [{}]
            default = outs[0].get("name", "model/Sigmoid")
            out = next((o["name"] for o in outs if o.get("output_purpose") == "predictions"), default)
            head = es.TensorflowPredict2D(graphFilename=str(base / f"{name}.pb"), input=inp, output=out)
            self.heads[kind] = (head, list(meta["classes"]))

    def scores(self, audio: np.ndarray, rate: int) -> dict[str, np.ndarray]:
        """Per vocabulary, each label's sigmoid probability: the highest over the model classes mapping to it."""
        x = np.ascontiguousarray(_mono(_to_rate(audio, rate, 16000)), dtype=np.float32)
        emb = self.embedder(x)
        out: dict[str, np.ndarray] = {}
        for kind, (head, classes) in self.heads.items():
            probs = np.asarray(head(emb)).mean(axis=0)
            vocab = self.vocabs[kind]
            index = {label: i for i, label in enumerate(vocab.labels)}
            scores = np.zeros(len(vocab.labels))
            for cls, p in zip(classes, probs):
                # Discogs classes read "Electronic---House": the style after "---" is the specific genre.
                label = vocab.match(cls.split("---")[-1])
                if label is not None:
                    scores[index[label]] = max(scores[index[label]], float(p))
            out[kind] = scores
        return out


def check_effnet_request(cfg: TagConfig) -> None:
    """Fail fast when effnet tags are requested but cannot run here; warn about their licence when they can."""
    if cfg.effnet_models_dir is None:
        return
    if not Path(cfg.effnet_models_dir).is_dir():
        raise ConfigError(f"tag.effnet_models_dir={cfg.effnet_models_dir} is not a folder", key="tag.effnet_models_dir")
    es = _essentia()
    if not hasattr(es, "TensorflowPredictEffnetDiscogs"):
        raise StageUnavailableError(
            "tag.effnet_models_dir is set but the installed essentia has no TensorFlow support; "
            "install essentia-tensorflow (it replaces essentia) or set tag.effnet_models_dir=null"
        )
    log.warning(EFFNET_LICENSE_WARNING)


# --------------------------------------------------------------------------------------------------
# Prep stage `tag` (window stage + a reduce over tracks)

RAW_KEY = "_tag_raw"  # window extra holding the map's measurements until `tag_tracks` turns them into columns
TINY_CLAP_SOURCE = "clap:tiny"  # tag source of CLAP tags from a tiny random model (never used in captions)
_loaded: dict[tuple[Any, ...], Any] = {}  # models loaded by this worker process


def as_tag_config(section: Any) -> TagConfig:
    """The `tag` section as a TagConfig (from a TagConfig, a dict or a DictConfig)."""
    if isinstance(section, Mapping) and "tag" in section and not hasattr(section, "clap_model"):
        return as_tag_config(section["tag"])
    return section_as(TagConfig, section)


def clap_source(cfg: TagConfig, models: Any) -> str:
    """`clap`, or `clap:tiny` when models=tiny swaps the CLAP checkpoint for a tiny random one."""
    from tunekit.models.registry import is_local_path

    tiny, _ = models_settings(models)
    return TINY_CLAP_SOURCE if tiny and not is_local_path(cfg.clap_model) else "clap"


def _clap_tagger(cfg: TagConfig, models: Any) -> ClapTagger:
    from tunekit.prep.vocab import load_vocabularies

    tiny, cache_dir = models_settings(models)
    key = ("clap", cfg.clap_model, tiny, cache_dir, cfg.vocab_dir, cfg.device)
    if key not in _loaded:
        from tunekit.models.clap import load_clap
        from tunekit.prep.separate import resolve_device

        device = resolve_device(cfg.device)
        model, processor = load_clap(cfg.clap_model, tiny=tiny, cache_dir=cache_dir, device=device)
        _loaded[key] = ClapTagger(model, processor, load_vocabularies(cfg.vocab_dir), cfg)
    tagger: ClapTagger = _loaded[key]
    tagger.cfg = cfg
    return tagger


def _effnet_tagger(cfg: TagConfig) -> EffnetTagger:
    from tunekit.prep.vocab import load_vocabularies

    key = ("effnet", cfg.effnet_models_dir, cfg.vocab_dir)
    if key not in _loaded:
        _loaded[key] = EffnetTagger(str(cfg.effnet_models_dir), load_vocabularies(cfg.vocab_dir), cfg)
    tagger: EffnetTagger = _loaded[key]
    tagger.cfg = cfg
    return tagger


def tag_model_fingerprint(section: Any, models: Any) -> str:
    """What the tag stage's results depend on besides audio and parameters: vocabularies and model files."""
    from tunekit.models.hashing import model_fingerprint
    from tunekit.models.registry import resolve
    from tunekit.prep.cache import fingerprint
    from tunekit.prep.vocab import VOCAB_FILES, load_vocabularies

    cfg = as_tag_config(section)
    vocabs = load_vocabularies(cfg.vocab_dir)
    parts: dict[str, Any] = {kind: [vocab.labels, sorted(vocab.aliases.items())] for kind, vocab in vocabs.items()}
    parts["vocab_files"] = sorted(VOCAB_FILES.values())
    if cfg.clap:
        tiny, cache_dir = models_settings(models)
        parts["clap"] = model_fingerprint(resolve(cfg.clap_model, tiny=tiny, cache_dir=cache_dir))
    if cfg.effnet_models_dir:
        check_effnet_request(cfg)
        parts["effnet"] = model_fingerprint(cfg.effnet_models_dir)
    return fingerprint(parts)


def tag_preflight(section: Any, models: Any) -> list[str]:
    """The CLAP checkpoint checked before any work: one that is not CLAP would fail every window."""
    from tunekit.models.clap import load_clap_config

    cfg = as_tag_config(section)
    if not cfg.enabled or not cfg.clap:
        return []
    tiny, cache_dir = models_settings(models)
    try:
        load_clap_config(cfg.clap_model, tiny=tiny, cache_dir=cache_dir)
    except ConfigError as exc:
        return [f"tag.clap_model: {exc}"]
    return []


def tag_window(row: Any, section: Any, ctx: Any) -> Any:
    """Map step: Essentia features (and model scores) of one window; window 0 also analyses its whole track.

    The results wait in `extra[RAW_KEY]`; `tag_tracks` (the stage's reduce) adds metadata, applies the
    track/window rule and writes the tag columns.
    """
    import dataclasses

    from tunekit.audio.io import read_audio

    cfg = as_tag_config(section)
    if not cfg.enabled:
        return row
    path = ctx.out_path(row.audio_path)
    audio, rate = read_audio(path, start=int(row.offset_frames), frames=int(row.frames))
    raw: dict[str, Any] = {"window": essentia_features(audio, rate, cfg.key_profile), "predictions": []}
    if int(row.window_index) == 0:
        full, full_rate = read_audio(path)
        raw["track"] = essentia_features(full, full_rate, cfg.key_profile)
    if cfg.clap:
        scores = _clap_tagger(cfg, ctx.models).scores(audio, rate)
        plain = {k: [float(v) for v in s] for k, s in scores.items()}
        raw["predictions"].append([clap_source(cfg, ctx.models), plain])
    if cfg.effnet_models_dir:
        scores = _effnet_tagger(cfg).scores(audio, rate)
        raw["predictions"].append(["effnet", {k: [float(v) for v in s] for k, s in scores.items()}])
    return dataclasses.replace(row, extra={**row.extra, RAW_KEY: raw})


def aggregate_features(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Track features from window features when no whole-track analysis exists (its first window was dropped).

    Tempo: the most confident window's; key: the key with the largest summed strength (mean strength);
    danceability and loudness range: medians.
    """
    out: dict[str, Any] = {"bpm": None, "bpm_confidence": 0.0, "key": None, "key_strength": 0.0,
                           "danceability": None, "loudness_range_lu": None}  # fmt: skip
    with_bpm = [w for w in windows if w.get("bpm") is not None]
    if with_bpm:
        best = max(with_bpm, key=lambda w: w["bpm_confidence"])
        out.update(bpm=best["bpm"], bpm_confidence=best["bpm_confidence"])
    votes: dict[str, list[float]] = {}
    for w in windows:
        if w.get("key"):
            votes.setdefault(w["key"], []).append(float(w["key_strength"]))
    if votes:
        key = max(votes, key=lambda k: sum(votes[k]))
        out.update(key=key, key_strength=round(float(np.mean(votes[key])), 4))
    for name in ("danceability", "loudness_range_lu"):
        values = [w[name] for w in windows if w.get(name) is not None]
        out[name] = round(float(np.median(values)), 4) if values else None
    return out


Predictions = list[tuple[str, dict[str, list[tuple[str, float]]]]]


def _selected(predictions: Sequence[Any], labels: Mapping[str, Sequence[str]], cfg: TagConfig) -> Predictions:
    """(source, {kind: scores}) -> (source, {kind: [(label, score)]}) with each source's threshold and top-k."""
    out = []
    for source, scores in predictions:
        threshold = cfg.effnet_threshold if source == "effnet" else cfg.clap_threshold
        picked = {k: select_labels(scores[k], labels[k], cfg.top_k()[k], threshold) for k in KINDS if k in scores}
        out.append((source, picked))
    return out


def tag_tracks(rows: list[Any], section: Any, ctx: Any) -> list[Any]:
    """Reduce step: per track, merge metadata with the model tags, settle tempo/key, write the columns.

    Windows get bpm/key (track rule, see the module docstring), genres, moods, instruments, tag_sources
    (JSON) and `instrumental`; the track row gets its whole-track values and tags.
    """
    import dataclasses
    import json

    from tunekit.prep.rows import OK
    from tunekit.prep.vocab import load_vocabularies

    cfg = as_tag_config(section)
    if not cfg.enabled:
        return rows
    vocabs = load_vocabularies(cfg.vocab_dir)
    labels = {kind: list(vocab.labels) for kind, vocab in vocabs.items()}
    out = []
    tiny_tags = 0
    for track in rows:
        raws = [w.extra.get(RAW_KEY) for w in track.windows]
        if track.status != OK or not track.windows or any(r is None for r in raws):
            if track.status == OK and track.windows:
                log.warning("track %s: some windows have no tag measurements; its tags are left out", track.track_id)
            out.append(track)
            continue
        track_feats = next((r["track"] for r in raws if "track" in r), None)
        if track_feats is None:
            track_feats = aggregate_features([r["window"] for r in raws])
        track_tags = track_dsp_tags(track_feats, [r["window"] for r in raws], cfg)
        meta = metadata_tags(track.genre, track.tags, vocabs) if cfg.metadata_tags else {k: [] for k in KINDS}
        instrumental = bool(track.instrumental) or bool(track.extra.get("separated"))
        windows = []
        for w, raw in zip(track.windows, raws):
            merged = merge_tags(meta, _selected(raw["predictions"], labels, cfg), cfg.top_k())
            extra = {k: v for k, v in w.extra.items() if k != RAW_KEY}
            extra.update(window_dsp_tags(raw["window"], track_tags, cfg))
            extra.update({kind: merged[kind] for kind in KINDS})
            extra["tag_sources"] = json.dumps(merged["tag_sources"], sort_keys=True)
            extra["instrumental"] = instrumental
            windows.append(dataclasses.replace(w, extra=extra))
        # Track-level model tags: each source's scores averaged over the windows, weighted by duration.
        weights = np.array([max(float(w.duration_s), 1e-3) for w in track.windows])
        track_preds = []
        for i, (source, _) in enumerate(raws[0]["predictions"]):
            mean = {
                k: list(np.average([np.asarray(r["predictions"][i][1][k]) for r in raws], axis=0, weights=weights))
                for k in raws[0]["predictions"][i][1]
            }
            track_preds.append([source, mean])
        merged = merge_tags(meta, _selected(track_preds, labels, cfg), cfg.top_k())
        t_extra = dict(track.extra)
        t_extra.update(track_tags)
        t_extra.update({kind: merged[kind] for kind in KINDS})
        t_extra["tag_sources"] = json.dumps(merged["tag_sources"], sort_keys=True)
        out.append(dataclasses.replace(track, windows=windows, extra=t_extra))
        tiny_tags += sum(src == TINY_CLAP_SOURCE for src in merged["tag_sources"].values())
    if tiny_tags:
        log.info("models=tiny: CLAP is a tiny random model, so its %d track tags (and the window tags) are recorded "
                 "with source %r and left out of captions, which use DSP and metadata tags only",
                 tiny_tags, TINY_CLAP_SOURCE)  # fmt: skip
    return out

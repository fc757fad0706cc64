"""Semantic tags: genres, moods/themes and instruments from corpus metadata, CLAP zero-shot and (optionally)
Essentia's discogs-effnet heads, all mapped onto the shared vocabularies (`tunekit.prep.vocab`).

Metadata is trusted first (`metadata_tags`, `merge_tags`); CLAP scores every label of a vocabulary
against prompt templates (`clap_zero_shot`, `ClapTagger`); the effnet heads score their own classes
(`EffnetTagger`). Loaded taggers are kept per process in `TAGGERS` (see `ModelCache`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tunekit.audio.channels import to_mono
from tunekit.errors import ConfigError, StageUnavailableError
from tunekit.models.embedders import ClapEmbedder
from tunekit.prep.rows import models_root, models_settings
from tunekit.prep.tag_config import TagConfig
from tunekit.prep.tag_dsp import _essentia, _to_rate
from tunekit.prep.vocab import KINDS, Vocabularies, load_vocabularies, split_tag_field, unique

log = logging.getLogger(__name__)

# Prompt ensembles per vocabulary: CLAP text embeddings are averaged over these templates.
CLAP_PROMPTS: dict[str, tuple[str, ...]] = {
    "genres": ("This is a {label} track.", "{label} music"),
    "moods": ("This is {label} music.", "music with a {label} mood"),
    "instruments": ("This track features {label}.", "music played on {label}"),
}
TINY_CLAP_SOURCE = "clap:tiny"  # tag source of CLAP tags from a tiny random model (never used in captions)
EFFNET_LICENSE_WARNING = (
    "the Essentia discogs-effnet models are licensed CC BY-NC-SA 4.0 (non-commercial): tags they produce "
    "may not be usable for a commercial model"
)


# --------------------------------------------------------------------------------------------------
# Metadata tags and merging

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


def select_labels(
    scores: Sequence[float], labels: Sequence[str], top_k: int, threshold: float
) -> list[tuple[str, float]]:
    """The `top_k` best labels whose score is at least `threshold`, best first, as [(label, score)]."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(labels[i], round(float(scores[i]), 4)) for i in order if scores[i] >= threshold and scores[i] > 0]


# --------------------------------------------------------------------------------------------------
# CLAP zero-shot


def clap_embedder(model: Any, processor: Any, window_seconds: float = 10.0, model_id: str = "clap") -> ClapEmbedder:
    """The CLAP embedder evaluation uses (`tunekit.models.embedders.ClapEmbedder`) with this window length.

    Tagging and the CLAP score share one window policy: mono, 48 kHz, non-overlapping windows, a final
    partial window kept when at least half a window long.
    """
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


def clap_source(cfg: TagConfig, models: Any) -> str:
    """`clap`, or `clap:tiny` when models=tiny swaps the CLAP checkpoint for a tiny random one."""
    from tunekit.models.hub import is_local_path

    tiny, _ = models_settings(models)
    return TINY_CLAP_SOURCE if tiny and not is_local_path(cfg.clap_model) else "clap"


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
        x = np.ascontiguousarray(to_mono(_to_rate(audio, rate, 16000)), dtype=np.float32)
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
# Loaded taggers

T = TypeVar("T")


class ModelCache:
    """Taggers loaded by one process, each built once and reused for every window that process tags.

    Loading CLAP and embedding every label's prompts takes seconds, so the `tag` stage keeps its taggers
    here between rows: each local worker process has its own copy of the module-level `TAGGERS`. An
    executor that keeps models in long-lived workers (e.g. Ray actors) gets the same reuse per actor.
    Keys name everything a tagger is built from (checkpoint, tiny flag, cache dir, vocabularies, device).
    """

    def __init__(self) -> None:
        self._items: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...], build: Callable[[], T]) -> T:
        """The item under `key`, built by `build()` on first use."""
        if key not in self._items:
            self._items[key] = build()
        item: T = self._items[key]
        return item

    def clear(self) -> None:
        """Drop every loaded item (their memory is freed once nothing else holds them)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


TAGGERS = ModelCache()  # the taggers this process has loaded


def clap_tagger(cfg: TagConfig, models: Any, cache: ModelCache = TAGGERS) -> ClapTagger:
    """The CLAP tagger for `cfg` (loaded once per process); its thresholds and window length follow `cfg`."""
    tiny, cache_dir = models_settings(models)

    def build() -> ClapTagger:
        from tunekit.models.clap import load_clap
        from tunekit.models.device import resolve_device

        device = resolve_device(cfg.device)
        model, processor = load_clap(cfg.clap_model, tiny=tiny, cache_dir=cache_dir, device=device)
        return ClapTagger(model, processor, load_vocabularies(cfg.vocab_dir), cfg)

    tagger = cache.get(("clap", cfg.clap_model, tiny, models_root(models), cfg.vocab_dir, cfg.device), build)
    tagger.cfg = cfg
    return tagger


def effnet_tagger(cfg: TagConfig, cache: ModelCache = TAGGERS) -> EffnetTagger:
    """The discogs-effnet tagger for `cfg` (loaded once per process); its thresholds follow `cfg`."""

    def build() -> EffnetTagger:
        return EffnetTagger(str(cfg.effnet_models_dir), load_vocabularies(cfg.vocab_dir), cfg)

    tagger = cache.get(("effnet", cfg.effnet_models_dir, cfg.vocab_dir), build)
    tagger.cfg = cfg
    return tagger

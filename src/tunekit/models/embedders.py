"""Embedders: a model plus its window policy (how a clip is cut, resampled and embedded), and the CLAP one.

`Embedder` is the contract: `windows()` cuts a clip into what the model takes, `embed_windows()` embeds a
batch of them, `cache_key()` names what an embedding depends on. `ClapEmbedder` is shared by prep (CLAP
zero-shot tags) and eval (CLAP-embedding FAD and the CLAP score), so both use one window policy: mono mix
resampled to 48 kHz (soxr); non-overlapping windows of the feature extractor's length (10 s for
`laion/larger_clap_music`); a final partial window kept when it is at least half a window long (or is the
only one) and repeat-padded by CLAP's own feature extractor; one L2-normalised embedding per window.
Windows are never longer than the extractor's length, so CLAP's random "fusion" crops never apply and the
embedding is deterministic. The EnCodec and VGGish embedders are in `tunekit.eval.embeddings`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunekit.audio.channels import as_channels, to_mono
from tunekit.audio.resample import resample

POLICY_VERSION = 1  # bump when a window policy changes: cached statistics keyed on it are recomputed


@dataclass
class Embedder:
    """An embedding model with its window policy: `windows()` cuts a clip, `embed_windows()` embeds a batch."""

    name: str
    model_id: str
    sample_rate: int
    dim: int
    fingerprint: str
    policy: str
    params: dict[str, Any] = field(default_factory=dict)

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        raise NotImplementedError

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def cache_key(self) -> str:
        """What the reference statistics depend on: model weights, window policy and its parameters."""
        blob = json.dumps(
            {"name": self.name, "fingerprint": self.fingerprint, "policy": POLICY_VERSION, "params": self.params},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "fingerprint": self.fingerprint,
            "sample_rate": self.sample_rate,
            "dim": self.dim,
            "policy": self.policy,
        }


class ClapEmbedder(Embedder):
    """CLAP audio (and text) embeddings via transformers' ClapModel and its feature extractor."""

    def __init__(self, model: Any, processor: Any, model_id: str, fingerprint: str, device: str = "cpu") -> None:
        fe = processor.feature_extractor
        self.model, self.processor, self.device = model, processor, device
        self.window = int(round(fe.max_length_s * fe.sampling_rate))
        super().__init__(
            name="clap",
            model_id=model_id,
            sample_rate=int(fe.sampling_rate),
            dim=int(model.config.projection_dim),
            fingerprint=fingerprint,
            policy=(
                f"mono, {fe.sampling_rate / 1000:g} kHz, non-overlapping {fe.max_length_s:g} s windows (final partial "
                f"window kept when ≥ half a window, repeat-padded); one {model.config.projection_dim}-d normalised "
                "embedding per window"
            ),
            params={"window": self.window, "rate": int(fe.sampling_rate), "truncation": fe.truncation},
        )

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        x = to_mono(resample(as_channels(audio), rate, self.sample_rate))
        w = self.window
        out = [x[i : i + w] for i in range(0, max(len(x), 1), w)]
        if len(out) > 1 and len(out[-1]) < w // 2:
            out = out[:-1]
        return [o for o in out if len(o) > 0]

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        import torch

        feats = self.processor.feature_extractor(
            [np.asarray(w, dtype=np.float64) for w in windows], sampling_rate=self.sample_rate, return_tensors="pt"
        )
        # No window exceeds max_length, so none is "longer": undo the extractor's random pick of one.
        is_longer = torch.zeros_like(feats["is_longer"], dtype=torch.bool)
        with torch.inference_mode():
            out = self.model.get_audio_features(
                input_features=feats["input_features"].to(self.device, dtype=self._dtype()),
                is_longer=is_longer.to(self.device),
            )
        return out.pooler_output.float().cpu().numpy()

    def embed_texts(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, dim) normalised text embeddings of the prompts."""
        import torch

        chunks = []
        for i in range(0, len(texts), batch_size):
            tok = self.processor.tokenizer(texts[i : i + batch_size], padding=True, truncation=True, return_tensors="pt")
            with torch.inference_mode():
                out = self.model.get_text_features(
                    input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
                )
            chunks.append(out.pooler_output.float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    def _dtype(self) -> Any:
        return next(self.model.parameters()).dtype

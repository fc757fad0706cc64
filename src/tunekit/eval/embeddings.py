"""Audio embeddings for FAD: CLAP, EnCodec encoder latents and VGGish, each with its own rate and frames.

Frame/window policy (also printed in the report):

- **clap** (`laion/larger_clap_music`): mono mix resampled to 48 kHz (soxr); cut into non-overlapping
  10 s windows; a final partial window is kept when it is at least half a window long (or is the
  only one) and is repeat-padded by CLAP's own feature extractor; one 512-d L2-normalised audio
  embedding per window. `ClapEmbedder` and the `Embedder` contract live in `tunekit.models.embedders`,
  shared with prep's CLAP zero-shot tags.
- **encodec** (`facebook/encodec_32khz`): mono mix (both channels for a stereo codec) resampled to
  32 kHz; the continuous encoder output before quantisation, one 128-d frame per 20 ms (50 Hz);
  clips are encoded in chunks of at most 30 s.
- **vggish**: mono mix resampled to 16 kHz; 96×64 log-mel patches of 0.96 s without overlap (a final
  partial patch is dropped); one 128-d embedding per patch from the last FC layer before its ReLU,
  without PCA (as fadtk's `vggish`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tunekit.audio.channels import as_channels, to_mono
from tunekit.audio.resample import resample
from tunekit.errors import ConfigError
from tunekit.models.device import resolve_device
from tunekit.models.embedders import ClapEmbedder, Embedder

class EncodecEmbedder(Embedder):
    """Continuous EnCodec encoder frames (before the residual quantiser)."""

    CHUNK_S = 30.0

    def __init__(self, model: Any, model_id: str, fingerprint: str, device: str = "cpu") -> None:
        cfg = model.config
        self.model, self.device = model, device
        self.channels = int(cfg.audio_channels)
        self.normalize = bool(cfg.normalize)
        super().__init__(
            name="encodec",
            model_id=model_id,
            sample_rate=int(cfg.sampling_rate),
            dim=int(cfg.hidden_size),
            fingerprint=fingerprint,
            policy=(
                f"{'mono' if self.channels == 1 else 'stereo'}, {cfg.sampling_rate / 1000:g} kHz, continuous encoder "
                f"output before quantisation: one {cfg.hidden_size}-d frame per {1000 / cfg.frame_rate:g} ms "
                f"({cfg.frame_rate:g} Hz); clips encoded in chunks of at most {self.CHUNK_S:g} s"
            ),
            params={"rate": int(cfg.sampling_rate), "channels": self.channels, "chunk_s": self.CHUNK_S},
        )

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        x = resample(as_channels(audio), rate, self.sample_rate)
        if self.channels == 1:
            x = to_mono(x)[None, :]
        elif x.shape[0] == 1:
            x = np.repeat(x, self.channels, axis=0)
        chunk = int(self.CHUNK_S * self.sample_rate)
        return [x[:, i : i + chunk] for i in range(0, x.shape[1], chunk) if x.shape[1] - i > 0]

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """Frames of each window, concatenated in order (windows of equal length run as one batch)."""
        import torch

        out: list[np.ndarray] = []
        for group in _equal_length_runs(windows):
            x = torch.from_numpy(np.stack(group)).to(self.device, dtype=next(self.model.parameters()).dtype)
            with torch.inference_mode():
                if self.normalize:
                    scale = x.mean(dim=1, keepdim=True).pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8
                    x = x / scale
                emb = self.model.encoder(x)  # (batch, dim, frames)
            out += list(emb.transpose(1, 2).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)

    def frames_per_window(self, windows: list[np.ndarray]) -> list[int]:
        hop = int(np.prod(self.model.config.upsampling_ratios))
        return [int(np.ceil(w.shape[-1] / hop)) for w in windows]


class VggishEmbedder(Embedder):
    """VGGish embeddings of 0.96 s log-mel patches."""

    def __init__(self, model: Any, model_id: str, fingerprint: str, device: str = "cpu") -> None:
        from tunekit.models import vggish

        self.model, self.device = model, device
        super().__init__(
            name="vggish",
            model_id=model_id,
            sample_rate=vggish.SAMPLE_RATE,
            dim=vggish.EMBEDDING_SIZE,
            fingerprint=fingerprint,
            policy=(
                "mono, 16 kHz, 96×64 log-mel patches (25 ms window, 10 ms hop, 125–7500 Hz, log(mel + 0.01)) of "
                "0.96 s without overlap; one 128-d embedding per patch (last FC layer before its ReLU, no PCA)"
            ),
            params={"layer": "fc-pre-relu", "pca": False},
        )

    def windows(self, audio: np.ndarray, rate: int) -> list[np.ndarray]:
        from tunekit.models.vggish import waveform_to_examples

        return list(waveform_to_examples(audio, rate))

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.stack(windows)).to(self.device)
        with torch.inference_mode():
            return self.model.embed(x, activation=False).float().cpu().numpy()


def frames_for_seconds(e: Embedder, seconds: float) -> int:
    """Embedding frames `e` gets from a clip of `seconds`, by its own window policy (no model call)."""
    n = int(round(seconds * e.sample_rate))
    if n <= 0:
        return 0
    windows = e.windows(np.zeros((1, n), dtype=np.float32), e.sample_rate)
    if isinstance(e, EncodecEmbedder):
        return sum(e.frames_per_window(windows))
    return len(windows)


def _equal_length_runs(windows: list[np.ndarray]) -> Iterator[list[np.ndarray]]:
    run: list[np.ndarray] = []
    for w in windows:
        if run and w.shape != run[0].shape:
            yield run
            run = []
        run.append(w)
    if run:
        yield run


def embed_items(
    embedders: list[Embedder],
    clips: Iterable[tuple[str, np.ndarray, int]],
    *,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """{embedder name: {clip id: (frames, dim) float32}} for (id, audio, rate) clips, each clip read once.

    Windows from several clips share a batch; frames are handed back to their own clip by id.
    A clip too short for any window gets a (0, dim) array.
    """
    results: dict[str, dict[str, list[np.ndarray]]] = {e.name: {} for e in embedders}
    pending: dict[str, list[tuple[str, np.ndarray]]] = {e.name: [] for e in embedders}

    def flush(e: Embedder) -> None:
        queue = pending[e.name]
        if not queue:
            return
        wins = [w for _, w in queue]
        emb = e.embed_windows(wins)
        counts = e.frames_per_window(wins) if isinstance(e, EncodecEmbedder) else [1] * len(wins)
        if sum(counts) != emb.shape[0]:
            raise RuntimeError(f"{e.name}: {emb.shape[0]} frames for windows expecting {sum(counts)}")
        pos = 0
        for (cid, _), c in zip(queue, counts, strict=True):
            results[e.name][cid].append(emb[pos : pos + c])
            pos += c
        queue.clear()

    for n, (cid, audio, rate) in enumerate(clips, 1):
        for e in embedders:
            if cid in results[e.name]:
                raise ConfigError(f"clip id {cid!r} appears twice in one set")
            results[e.name][cid] = []
            for w in e.windows(audio, rate):
                pending[e.name].append((cid, w))
                if len(pending[e.name]) >= batch_size:
                    flush(e)
        if progress:
            progress(n)
    for e in embedders:
        flush(e)
    return {
        e.name: {
            cid: (np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, e.dim), dtype=np.float32))
            for cid, parts in results[e.name].items()
        }
        for e in embedders
    }


def _clap(model_id: str, tiny: bool, cache_dir: Any, device: str) -> Embedder:
    from tunekit.models.clap import load_clap
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    model, processor = load_clap(model_id, tiny=tiny, cache_dir=cache_dir, device=device)
    return ClapEmbedder(model, processor, model_id, model_digest(resolve(model_id, tiny=tiny, cache_dir=cache_dir)),
                        device)


def _encodec(model_id: str, tiny: bool, cache_dir: Any, device: str) -> Embedder:
    from tunekit.models.digest import model_digest
    from tunekit.models.encodec import load_encodec
    from tunekit.models.registry import resolve

    model, _ = load_encodec(model_id, tiny=tiny, cache_dir=cache_dir, device=device)
    return EncodecEmbedder(model, model_id, model_digest(resolve(model_id, tiny=tiny, cache_dir=cache_dir)), device)


def _vggish(model_id: str, tiny: bool, cache_dir: Any, device: str) -> Embedder:
    from tunekit.models.vggish import load_vggish

    model = load_vggish(model_id, tiny=tiny, cache_dir=cache_dir).to(device)
    return VggishEmbedder(model, model_id, model.fingerprint, device)


# Each embedding name (the `embeddings=` choices, eval.config.EMBEDDING_NAMES) → its builder and the eval key
# naming its checkpoint.
EMBEDDERS: dict[str, tuple[Callable[[str, bool, Any, str], Embedder], str]] = {
    "clap": (_clap, "clap_model"),
    "encodec": (_encodec, "encodec_model"),
    "vggish": (_vggish, "vggish_model"),
}


def load_embedder(name: str, *, models: Any, device: str = "cpu", **model_ids: str) -> Embedder:
    """Build the named embedder from its configured model id (`clap_model=…` etc.; tiny stand-ins with
    `models.tiny`)."""
    if name not in EMBEDDERS:
        raise ConfigError(f"unknown embedding {name!r}; use any of {list(EMBEDDERS)}", key="embeddings")
    build, key = EMBEDDERS[name]
    return build(model_ids[key], bool(models.tiny), models.cache_dir, resolve_device(device))

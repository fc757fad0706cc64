"""VGGish in PyTorch: the AudioSet embedding network, its log-mel front end and PCA postprocessor.

Architecture (Hershey et al. 2017): four conv blocks 64 | 128 | 256-256 | 512-512 (3×3, ReLU, 2×2
max-pool after each block) over a 96×64 log-mel patch, then FC 4096-4096-128. Front end: mono audio
resampled to 16 kHz (soxr), 25 ms periodic-Hann windows every 10 ms, 512-point FFT magnitude,
64 HTK mel bands over 125–7500 Hz, log(mel + 0.01), framed into non-overlapping 0.96 s examples
(96 frames; a final partial example is dropped). Postprocessor: PCA with whitening, clip to
[−2, 2], 8-bit quantisation (the released AudioSet embeddings).

Weights are the standard torchvggish conversion: `vggish-10086976.pth` (state_dict keys
`features.{0,3,6,8,11,13}.*`, `embeddings.{0,2,4}.*`) and `vggish_pca_params-970ea276.pth`
(`pca_eigen_vectors` 128×128, `pca_means` 128), read with `torch.load(weights_only=True)`; the
same tensors in a `.safetensors` file, and Google's original `vggish_pca_params.npz`, load too.
Layer widths are read from the weights, so the tiny random model (`tiny=True`) is the same class
with narrower layers, saved in the same two-file layout and loaded through the same code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunekit.errors import ConfigError, StageUnavailableError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE = 16_000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s of 10 ms frames per example
EXAMPLE_SECONDS = EXAMPLE_FRAMES * STFT_HOP_SECONDS
EMBEDDING_SIZE = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0

DEFAULT_ID = "torchvggish"
WEIGHTS_FILE = "vggish-10086976.pth"
PCA_FILE = "vggish_pca_params-970ea276.pth"
RELEASE_URLS = {
    WEIGHTS_FILE: "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    PCA_FILE: "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth",
}
CONV_CHANNELS = (64, 128, 256, 256, 512, 512)
FC_SIZES = (4096, 4096)
_POOL_AFTER = (0, 1, 3, 5)  # conv indices followed by a 2×2 max-pool
TINY_CONV_CHANNELS = (4, 8, 8, 8, 16, 16)
TINY_FC_SIZES = (64, 64)
TINY_SEED = 1234


# ----------------------------------------------------------------------------- front end (numpy)


def hertz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: 1127·ln(1 + f/700)."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_matrix(num_spectrogram_bins: int = 257, rate: int = SAMPLE_RATE) -> np.ndarray:
    """(bins, 64) triangular HTK mel weights over 125–7500 Hz with the DC bin zeroed, as VGGish uses."""
    bins_mel = hertz_to_mel(np.linspace(0.0, rate / 2.0, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_MEL_BINS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def log_mel(waveform_16k: np.ndarray) -> np.ndarray:
    """(frames, 64) log-mel spectrogram of mono 16 kHz audio: 25 ms periodic Hann, 10 ms hop, no padding."""
    x = np.asarray(waveform_16k, dtype=np.float64)
    win = int(round(SAMPLE_RATE * STFT_WINDOW_SECONDS))
    hop = int(round(SAMPLE_RATE * STFT_HOP_SECONDS))
    n_fft = 2 ** int(np.ceil(np.log2(win)))
    if x.shape[0] < win:
        return np.zeros((0, NUM_MEL_BINS), dtype=np.float64)
    n_frames = 1 + (x.shape[0] - win) // hop
    frames = np.lib.stride_tricks.as_strided(x, shape=(n_frames, win), strides=(x.strides[0] * hop, x.strides[0]))
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi / win * np.arange(win))
    magnitude = np.abs(np.fft.rfft(frames * window, n_fft))
    return np.log(magnitude @ mel_matrix(n_fft // 2 + 1) + LOG_OFFSET)


def to_mono_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mix (channels, samples) or (samples,) audio to mono and resample to 16 kHz with soxr."""
    from tunekit.audio.channels import to_mono
    from tunekit.audio.resample import resample

    x = resample(to_mono(np.asarray(audio, dtype=np.float32)), rate, SAMPLE_RATE, quality="HQ")
    return np.asarray(x, dtype=np.float32)


def waveform_to_examples(audio: np.ndarray, rate: int) -> np.ndarray:
    """(examples, 1, 96, 64) float32 log-mel patches, one per non-overlapping 0.96 s of audio."""
    mel = log_mel(to_mono_16k(audio, rate))
    n = mel.shape[0] // EXAMPLE_FRAMES
    patches = mel[: n * EXAMPLE_FRAMES].reshape(n, EXAMPLE_FRAMES, NUM_MEL_BINS)
    return patches[:, None, :, :].astype(np.float32)


# ----------------------------------------------------------------------------- network


def _build_module(conv_channels: tuple[int, ...], fc_sizes: tuple[int, ...]) -> Any:
    import torch
    from torch import nn

    class VGGish(nn.Module):
        """VGGish network. `features`/`embeddings` indices match torchvggish, so its weights load as is."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            in_ch = 1
            for i, ch in enumerate(conv_channels):
                layers += [nn.Conv2d(in_ch, ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                if i in _POOL_AFTER:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                in_ch = ch
            self.features = nn.Sequential(*layers)
            flat = conv_channels[-1] * (EXAMPLE_FRAMES // 16) * (NUM_MEL_BINS // 16)
            self.embeddings = nn.Sequential(
                nn.Linear(flat, fc_sizes[0]),
                nn.ReLU(True),
                nn.Linear(fc_sizes[0], fc_sizes[1]),
                nn.ReLU(True),
                nn.Linear(fc_sizes[1], EMBEDDING_SIZE),
                nn.ReLU(True),
            )
            self.pca_eigen_vectors = nn.Parameter(torch.eye(EMBEDDING_SIZE), requires_grad=False)
            self.pca_means = nn.Parameter(torch.zeros(EMBEDDING_SIZE, 1), requires_grad=False)
            self.conv_channels = tuple(conv_channels)
            self.fc_sizes = tuple(fc_sizes)

        def embed(self, examples: torch.Tensor, activation: bool = False) -> torch.Tensor:
            """(B, 1, 96, 64) log-mel patches → (B, 128) embeddings.

            `activation=False` returns the last FC layer before its ReLU (the embedding FAD tools use);
            `True` returns torchvggish's output, ReLU included.
            """
            x = self.features(examples)
            # (B, C, T, F) → (B, T, F, C) before flattening: the order the TF-converted FC weights expect.
            x = x.permute(0, 2, 3, 1).contiguous().flatten(1)
            layers = list(self.embeddings.children())
            for layer in layers[: -1 if not activation else None]:
                x = layer(x)
            return x

        def postprocess(self, embeddings: torch.Tensor) -> torch.Tensor:
            """PCA + whitening, clip to [−2, 2] and quantise to 0..255, as the released AudioSet embeddings."""
            pca = self.pca_eigen_vectors @ (embeddings.T - self.pca_means)
            clipped = pca.T.clamp(QUANTIZE_MIN, QUANTIZE_MAX)
            return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))

        def forward(self, examples: torch.Tensor, postprocess: bool = False) -> torch.Tensor:
            """torchvggish's embedding (with the final ReLU), optionally PCA-postprocessed."""
            x = self.embed(examples, activation=True)
            return self.postprocess(x) if postprocess else x

    return VGGish()


def build_vggish(conv_channels: tuple[int, ...] = CONV_CHANNELS, fc_sizes: tuple[int, ...] = FC_SIZES) -> Any:
    """A VGGish with the given layer widths and PyTorch's default random init (identity PCA)."""
    if len(conv_channels) != 6 or len(fc_sizes) != 2:
        raise ValueError("VGGish has 6 conv layers and 2 hidden FC layers")
    return _build_module(tuple(conv_channels), tuple(fc_sizes))


def _shapes_from_state_dict(sd: dict[str, Any], source: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    convs = sorted(
        (int(k.split(".")[1]), v.shape[0]) for k, v in sd.items() if k.startswith("features.") and k.endswith(".weight")
    )
    fcs = sorted(
        (int(k.split(".")[1]), v.shape[0]) for k, v in sd.items() if k.startswith("embeddings.") and k.endswith(".weight")
    )
    if len(convs) != 6 or len(fcs) != 3 or fcs[-1][1] != EMBEDDING_SIZE:
        raise ConfigError(
            f"{source} is not a VGGish checkpoint: expected torchvggish keys features.{{0,3,6,8,11,13}}.weight and "
            f"embeddings.{{0,2,4}}.weight (128 outputs); found {sorted(sd)[:8]}…",
            key="embeddings",
        )
    return tuple(c for _, c in convs), tuple(c for _, c in fcs[:2])


# ----------------------------------------------------------------------------- files


def _read_tensors(path: Path) -> dict[str, Any]:
    """Tensors from .safetensors, .pth (torch.load weights_only=True) or .npz (no pickle)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.asarray(data[k])) for k in data.files}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the released PCA file stores numpy arrays: allow exactly those types
        import pickle

        if not isinstance(exc, pickle.UnpicklingError):
            raise
        from numpy._core.multiarray import _reconstruct

        # numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*: allow both spellings.
        allowed: list[Any] = [np.ndarray, np.dtype, _reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct")]
        allowed += [type(np.dtype(t)) for t in ("float32", "float64")]
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ConfigError(f"{path} does not hold a state dict (got {type(obj).__name__})", key="embeddings")
    return {k: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v for k, v in obj.items()}


def _find_files(folder: Path) -> tuple[Path | None, Path | None]:
    """(weights, pca) files in a folder, by the torchvggish names first, then by pattern."""

    def first(names: list[str], patterns: list[str]) -> Path | None:
        for n in names:
            if (folder / n).is_file():
                return folder / n
        for pat in patterns:
            hits = sorted(folder.glob(pat))
            if hits:
                return hits[0]
        return None

    weights = first([WEIGHTS_FILE, "model.safetensors"], ["vggish-*.pth", "vggish*.safetensors"])
    pca = first([PCA_FILE, "vggish_pca_params.npz"], ["vggish_pca_params*.pth", "vggish_pca_params*.npz"])
    if weights is not None and weights == pca:
        pca = None
    return weights, pca


def _download_release(folder: Path) -> None:
    """Fetch the torchvggish release files (hash-checked by their file-name prefix) into `folder`."""
    from tunekit.models.hub import offline

    if offline():
        raise StageUnavailableError(
            f"VGGish weights are not in {folder} and downloads are off (HF_HUB_OFFLINE=1): put {WEIGHTS_FILE} and "
            f"{PCA_FILE} from {RELEASE_URLS[WEIGHTS_FILE].rsplit('/', 1)[0]}/ there, or pass a local folder"
        )
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    for name, url in RELEASE_URLS.items():
        dst = folder / name
        if dst.is_file():
            continue
        try:
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=name.rsplit("-", 1)[1].split(".")[0])
        except Exception as exc:  # network or hash failure: say what to fetch by hand
            raise StageUnavailableError(
                f"could not download VGGish weights from {url} ({exc}); put {name} into {folder} "
                f"or pass embeddings.vggish_model=<folder with {WEIGHTS_FILE} and {PCA_FILE}>"
            ) from exc


def _hub_files(repo_id: str) -> Path:
    """Download the two torchvggish files from a Hugging Face Hub repository; returns their folder."""
    from huggingface_hub import hf_hub_download

    try:
        weights = hf_hub_download(repo_id, WEIGHTS_FILE)
        hf_hub_download(repo_id, PCA_FILE)
    except Exception as exc:  # offline, missing repo or file
        raise StageUnavailableError(
            f"could not get VGGish weights from the Hub repository {repo_id!r} ({type(exc).__name__}: {exc}); "
            f"it must hold {WEIGHTS_FILE} and {PCA_FILE}, or pass a local folder"
        ) from exc
    return Path(weights).parent


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    from tunekit.paths import cache_dir as default_cache

    return Path(cache_dir).expanduser() if cache_dir else default_cache()


def build_tiny_vggish(out: Path) -> None:
    """Write the seeded tiny random VGGish into `out` in the torchvggish two-file layout."""
    import torch

    from tunekit.models.tiny import seeded

    with seeded(TINY_SEED):
        model = build_vggish(TINY_CONV_CHANNELS, TINY_FC_SIZES)
        q, _ = torch.linalg.qr(torch.randn(EMBEDDING_SIZE, EMBEDDING_SIZE))
    weights = {k: v for k, v in model.state_dict().items() if k.startswith(("features.", "embeddings."))}
    pca = {"pca_eigen_vectors": q.contiguous(), "pca_means": torch.zeros(EMBEDDING_SIZE)}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, str(out / WEIGHTS_FILE))
    torch.save(pca, str(out / PCA_FILE))


def ensure_tiny_vggish(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`<cache>/tiny/vggish/`, built once by `build_tiny_vggish` (through the tiny kit when it lists vggish)."""
    from tunekit.models import tiny as tiny_kit

    if "vggish" in tiny_kit.TINY_NAMES:
        return tiny_kit.ensure_tiny("vggish", cache_dir)
    final = tiny_kit.tiny_path("vggish", cache_dir)
    if (final / WEIGHTS_FILE).is_file() and (final / PCA_FILE).is_file():
        return final
    import shutil
    import tempfile

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".vggish.", suffix=".tmp", dir=final.parent))
    try:
        build_tiny_vggish(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if not (final / WEIGHTS_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_vggish(name_or_path: str, *, tiny: bool = False, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The local folder or file holding VGGish weights for `name_or_path` (downloading or building it)."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if tiny:
        if text not in (DEFAULT_ID, "vggish"):
            raise ConfigError(
                f"models.tiny is true but {text!r} is not a VGGish id tunekit has a tiny stand-in for; "
                f"use {DEFAULT_ID!r} or a local folder",
                key="models.tiny",
            )
        return ensure_tiny_vggish(cache_dir)
    if text in (DEFAULT_ID, "vggish"):
        folder = _cache_root(cache_dir) / "torchvggish"
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / PCA_FILE).is_file():
            _download_release(folder)
        return folder
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        return _hub_files(text)
    raise ConfigError(
        f"VGGish weights {text!r} not found: give a folder holding {WEIGHTS_FILE} and {PCA_FILE}, a .pth/.safetensors "
        f"file, a Hub repository id, or {DEFAULT_ID!r}",
        key="embeddings",
    )


def load_vggish(
    name_or_path: str = DEFAULT_ID, *, tiny: bool = False, cache_dir: str | os.PathLike[str] | None = None
) -> Any:
    """Load VGGish (eval mode, CPU) from a folder, a weights file, a Hub repo id or `torchvggish`.

    With `tiny=True` the default id becomes the seeded tiny random model, built once into the cache in
    the same two-file layout and loaded by this same code. The PCA file is optional: without it the
    postprocessor is the identity and `postprocess` only clips and quantises.
    """
    location = resolve_vggish(name_or_path, tiny=tiny, cache_dir=cache_dir)
    if location.is_dir():
        weights_path, pca_path = _find_files(location)
        if weights_path is None:
            raise ConfigError(f"no VGGish weights ({WEIGHTS_FILE} or model.safetensors) in {location}", key="embeddings")
    else:
        weights_path, pca_path = location, _find_files(location.parent)[1]
    tensors = _read_tensors(weights_path)
    pca = {k: tensors.pop(k) for k in ("pca_eigen_vectors", "pca_means") if k in tensors}
    if not pca and pca_path is not None:
        pca = _read_tensors(pca_path)
    net_sd = {k: v for k, v in tensors.items() if k.startswith(("features.", "embeddings."))}
    convs, fcs = _shapes_from_state_dict(net_sd, weights_path)
    from tunekit.file_digest import folder_digest

    model = build_vggish(convs, fcs)
    missing, unexpected = model.load_state_dict(net_sd, strict=False)
    missing = [k for k in missing if not k.startswith("pca_")]
    if missing or unexpected:
        raise ConfigError(f"{weights_path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}", key="embeddings")
    if pca:
        import torch

        vectors = torch.as_tensor(pca["pca_eigen_vectors"], dtype=torch.float32)
        means = torch.as_tensor(pca["pca_means"], dtype=torch.float32).reshape(-1, 1)
        if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE, 1):
            raise ConfigError(f"{pca_path}: PCA parameters must be 128×128 and 128; got {tuple(vectors.shape)}")
        model.pca_eigen_vectors.data.copy_(vectors)
        model.pca_means.data.copy_(means)
    model.source = str(location)
    model.fingerprint = folder_digest(location)
    return model.eval()

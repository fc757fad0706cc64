"""The melody condition of MusicGen-melody: a one-hot chromagram, computed as transformers'
`MusicgenMelodyFeatureExtractor` does (which needs torchaudio; this needs only torch).

Power spectrogram (Hann window, n_fft 16384, hop 4096, centred) -> librosa chroma filters -> the
strongest pitch class per frame set to 1, the others to 0. Spectrogram scaling does not matter
because only the argmax survives.
"""

from __future__ import annotations

import numpy as np


def melody_chroma(
    audio: np.ndarray, sample_rate: int = 32000, n_fft: int = 16384, hop_length: int = 4096, num_chroma: int = 12
) -> np.ndarray:
    """(frames, num_chroma) float32 one-hot chroma of mono `audio` at `sample_rate`."""
    import torch

    from transformers.audio_utils import chroma_filter_bank

    wav = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)
    if wav.numel() < n_fft:
        pad = n_fft - wav.numel()
        wav = torch.nn.functional.pad(wav, (pad // 2, pad // 2 + pad % 2))
    window = torch.hann_window(n_fft)
    spec = torch.stft(
        wav, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True, pad_mode="reflect",
        return_complex=True,
    ).abs() ** 2
    filters = torch.from_numpy(
        chroma_filter_bank(sampling_rate=sample_rate, num_frequency_bins=n_fft, tuning=0, num_chroma=num_chroma)
    ).float()
    raw = filters @ spec  # (chroma, frames)
    idx = raw.argmax(dim=0)
    out = torch.zeros((raw.shape[1], num_chroma))
    out[torch.arange(raw.shape[1]), idx] = 1.0
    return out.numpy()

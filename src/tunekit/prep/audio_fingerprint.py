"""A robust fingerprint of decoded audio, for finding the same recording in another container.

The audio is downmixed, resampled to 5512 Hz and cut into 0.37 s frames every 93 ms. Each frame
gives 32 bits: the sign of the time derivative of the energy differences between 33 adjacent
log-spaced bands (300-2000 Hz), the scheme of Haitsma & Kalker (2002). The bits survive lossless
re-encoding exactly, gain changes and resampling almost exactly, and lossy coding with a low bit
error rate (BER), while unrelated audio differs in about half the bits. Frames quieter than
-60 dBFS are excluded from comparisons so digital silence never matches.
"""

from __future__ import annotations

import numpy as np

FP_RATE = 5512
FRAME = 2048
HOP = 512
N_BANDS = 33
F_LO, F_HI = 300.0, 2000.0
SILENT_RMS = 10 ** (-60 / 20)
MIN_FRAMES = 20


def _band_matrix() -> np.ndarray:
    freqs = np.fft.rfftfreq(FRAME, 1.0 / FP_RATE)
    edges = np.geomspace(F_LO, F_HI, N_BANDS + 1)
    m = np.zeros((freqs.size, N_BANDS))
    for b in range(N_BANDS):
        m[(freqs >= edges[b]) & (freqs < edges[b + 1]), b] = 1.0
    return m


def compute(audio: np.ndarray, rate: int) -> str | None:
    """Fingerprint of (C, N) float audio as a hex string (bits then validity), or None if too short."""
    from tunekit.audio.channels import to_mono
    from tunekit.audio.resample import resample

    mono = to_mono(np.asarray(audio, dtype=np.float64))
    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    mono = resample(mono, rate, FP_RATE, quality="HQ")
    n_frames = 1 + (mono.size - FRAME) // HOP if mono.size >= FRAME else 0
    if n_frames < MIN_FRAMES + 1:
        return None
    frames = np.lib.stride_tricks.sliding_window_view(mono, FRAME)[::HOP][:n_frames]
    rms = np.sqrt(np.mean(frames**2, axis=1))
    spec = np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1)) ** 2
    energy = spec @ _band_matrix()  # (frames, 33)
    band_diff = energy[:, :-1] - energy[:, 1:]  # (frames, 32)
    bits = (band_diff[1:] - band_diff[:-1]) > 0  # (frames-1, 32)
    valid = (rms[1:] > SILENT_RMS) & (rms[:-1] > SILENT_RMS)
    words = np.packbits(bits, axis=1, bitorder="little").view("<u4").ravel()
    return words.astype("<u4").tobytes().hex() + ":" + np.packbits(valid, bitorder="little").tobytes().hex()


def decode(fp: str) -> tuple[np.ndarray, np.ndarray]:
    """(32-bit words, validity) of a fingerprint string."""
    words_hex, valid_hex = fp.split(":")
    words = np.frombuffer(bytes.fromhex(words_hex), dtype="<u4")
    valid = np.unpackbits(np.frombuffer(bytes.fromhex(valid_hex), dtype=np.uint8), bitorder="little")[: words.size]
    return words, valid.astype(bool)


def bit_error_rate(a: str, b: str, max_shift: int = 3) -> float:
    """Lowest fraction of differing bits over shifts of up to `max_shift` frames (1.0 if incomparable).

    Only frames that are not silent in both fingerprints count; fewer than MIN_FRAMES of them
    means the two cannot be compared.
    """
    wa, va = decode(a)
    wb, vb = decode(b)
    best = 1.0
    for shift in range(-max_shift, max_shift + 1):
        if shift >= 0:
            x, mx, y, my = wa[shift:], va[shift:], wb, vb
        else:
            x, mx, y, my = wa, va, wb[-shift:], vb[-shift:]
        n = min(x.size, y.size)
        mask = mx[:n] & my[:n]
        if mask.sum() < MIN_FRAMES:
            continue
        diff = np.bitwise_xor(x[:n][mask], y[:n][mask])
        errors = np.unpackbits(diff.view(np.uint8)).sum()
        best = min(best, float(errors) / (32.0 * mask.sum()))
    return best


def candidate_pairs(
    fingerprints: list[str | None], min_shared: int = 3, max_share: int = 50, max_shift: int = 3
) -> set[tuple[int, int]]:
    """Pairs (i, j), i < j, whose fingerprints share at least `min_shared` identical non-silent words
    at the same position (within `max_shift` frames).

    An index instead of all pairs: copies share many exact 32-bit words in step (lossless and
    resampled copies most of them, a lossy copy at a BER of 0.1 still a few percent), unrelated
    tracks only a few, at random positions. Words occurring more than `max_share` times in the
    corpus (steady tones, near-silence) carry no identity and are skipped. Candidates are then
    confirmed with `bit_error_rate`.
    """
    ids, words, frames = [], [], []
    for i, f in enumerate(fingerprints):
        if not f:
            continue
        w, v = decode(f)
        pos = np.flatnonzero(v)
        ids.append(np.full(pos.size, i, dtype=np.int64))
        words.append(w[pos].astype(np.int64))
        frames.append(pos.astype(np.int64))
    if not ids:
        return set()
    w, t, p = np.concatenate(words), np.concatenate(ids), np.concatenate(frames)
    order = np.lexsort((p, t, w))
    w, t, p = w[order], t[order], p[order]
    starts = np.flatnonzero(np.r_[True, w[1:] != w[:-1]])
    lengths = np.diff(np.r_[starts, w.size])
    keep = (lengths >= 2) & (lengths <= max_share)
    shared: dict[tuple[int, int], int] = {}
    for start, length in zip(starts[keep], lengths[keep]):
        owners, where = t[start : start + length], p[start : start + length]
        for x in range(length):
            for y in range(x + 1, length):
                if owners[x] != owners[y] and abs(where[x] - where[y]) <= max_shift:
                    pair = (int(min(owners[x], owners[y])), int(max(owners[x], owners[y])))
                    shared[pair] = shared.get(pair, 0) + 1
    return {pair for pair, n in shared.items() if n >= min_shared}

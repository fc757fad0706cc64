"""Quality stage: reject tracks that would hurt training, each with a reason code.

Codes: zero_length, too_short, non_finite (NaN/Inf samples), silent (integrated loudness below
quality.silence_lufs, digital silence included), clipping (share of samples at full scale above
quality.max_clip_ratio), low_bitrate (lossy files under quality.min_bitrate_kbps), low_sample_rate
(source under quality.min_sample_rate) and low_bandwidth (energy above quality.min_bandwidth_hz
under quality.bandwidth_floor_db relative to the total: an upsampled or heavily low-passed
source). Unreadable, truncated, undecodable and duplicate files are rejected earlier (decode,
ingest).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tunekit.prep.config import QualityConfig
from tunekit.prep.decode import SPECTRUM_BAND_HZ
from tunekit.prep.rows import Rejection, StageContext, TrackRow

BANDWIDTH_RANGE_DB = 60.0


def spectrum_measures(bands: list[float], cutoff_hz: float) -> tuple[float, float]:
    """(energy above `cutoff_hz` relative to the total in dB, bandwidth in Hz) from 250 Hz band powers.

    The bandwidth is the upper edge of the highest band within 60 dB of the strongest band.
    """
    p = np.asarray(bands, dtype=np.float64)
    total = p.sum()
    if total <= 0:
        return float("-inf"), 0.0
    lower_edges = np.arange(p.size) * SPECTRUM_BAND_HZ
    # The band containing the cutoff counts in proportion to the part above it.
    frac = np.clip((lower_edges + SPECTRUM_BAND_HZ - cutoff_hz) / SPECTRUM_BAND_HZ, 0.0, 1.0)
    above = float((p * frac).sum())
    hf_db = 10.0 * math.log10(above / total) if above > 0 else float("-inf")
    loud = np.nonzero(p >= p.max() * 10 ** (-BANDWIDTH_RANGE_DB / 10))[0]
    bandwidth = float((loud.max() + 1) * SPECTRUM_BAND_HZ) if loud.size else 0.0
    return hf_db, bandwidth


def check_quality(row: TrackRow, cfg: QualityConfig, ctx: StageContext) -> TrackRow | Rejection:
    """Apply every check in turn; the first failing one is the reason (stage function)."""
    if not row.work_frames:
        return Rejection("zero_length", "the file decodes to no audio")
    duration = row.duration_s or 0.0
    if duration < cfg.min_seconds:
        return Rejection("too_short", f"{duration:.2f} s < quality.min_seconds={cfg.min_seconds:g}")
    if row.nan_count:
        return Rejection("non_finite", f"{row.nan_count} NaN/Inf samples")
    lufs = row.lufs_decoded if row.lufs_decoded is not None else float("-inf")
    if not lufs >= cfg.silence_lufs:
        return Rejection("silent", f"integrated loudness {lufs:.1f} LUFS < quality.silence_lufs={cfg.silence_lufs:g}")
    if (row.clip_ratio or 0.0) > cfg.max_clip_ratio:
        return Rejection(
            "clipping",
            f"{100 * (row.clip_ratio or 0):.2f}% of samples at full scale "
            f"> quality.max_clip_ratio={cfg.max_clip_ratio:g}",
        )
    if row.lossy and row.bitrate_kbps is not None and row.bitrate_kbps < cfg.min_bitrate_kbps:
        return Rejection(
            "low_bitrate", f"{row.bitrate_kbps:.0f} kbps < quality.min_bitrate_kbps={cfg.min_bitrate_kbps:g}"
        )
    if row.sample_rate_in is not None and row.sample_rate_in < cfg.min_sample_rate:
        return Rejection(
            "low_sample_rate", f"source rate {row.sample_rate_in} Hz < quality.min_sample_rate={cfg.min_sample_rate}"
        )
    hf_db, bandwidth = spectrum_measures(row.spectrum, cfg.min_bandwidth_hz)
    row = dataclasses.replace(row, hf_energy_db=hf_db, bandwidth_hz=bandwidth)
    if hf_db < cfg.bandwidth_floor_db:
        return Rejection(
            "low_bandwidth",
            f"energy above {cfg.min_bandwidth_hz:g} Hz is {hf_db:.1f} dB of the total "
            f"< quality.bandwidth_floor_db={cfg.bandwidth_floor_db:g} (audible bandwidth ~{bandwidth:.0f} Hz)",
        )
    return row

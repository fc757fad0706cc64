"""Codec tokens: exact frames, lossless storage, round trip through the token file, MusicGen stereo order."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from tunekit.prep import tokens as tok
from tunekit.prep.tokens import TokensConfig, decode_tokens, encode_windows, read_window_tokens, write_track_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44100
CODEC = "facebook/encodec_32khz"


def _with_codewords(model, seed: int = 0):
    """Give a random codec distinct codewords, drawn from its own encoder outputs (EnCodec's k-means init).

    A freshly initialised EnCodec has all-zero codebooks, so every frame would be token 0 and no
    round trip could fail. Trained checkpoints already have codewords and are returned unchanged.
    """
    import torch

    layers = model.quantizer.layers
    if not all(float(layer.codebook.embed.std()) == 0.0 for layer in layers):
        return model
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.config.audio_channels, model.config.sampling_rate * 20, generator=g) * 0.1
    with torch.no_grad():
        residual = model.encoder(x)[0].T
        for layer in layers:
            embed = layer.codebook.embed
            pick = torch.randint(0, residual.shape[0], (embed.shape[0],), generator=g)
            embed.copy_(residual[pick] + 0.01 * residual.std() * torch.randn(embed.shape, generator=g))
            residual = residual - embed[torch.cdist(residual, embed).argmin(1)]
    return model


@pytest.fixture(scope="module")
def codec():
    from tunekit.models.encodec import load_encodec

    model, feature_extractor = load_encodec(CODEC, tiny=True)
    return _with_codewords(model), feature_extractor


def _windows() -> list[np.ndarray]:
    """Two full 6 s windows and a final partial one of 1.73 s (86.5 frames: the half frame is not kept)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(13.73 * RATE)) / RATE
    track = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]) * 0.3
    track = (track + 0.05 * rng.standard_normal(track.shape)).astype(np.float32)
    return [track[:, :6 * RATE], track[:, 6 * RATE:12 * RATE], track[:, 12 * RATE:]]


def _direct_encode(model, window: np.ndarray) -> np.ndarray:
    """The codec's own encode of the window's mid, resampled to 32 kHz with soxr: (codebooks, frames)."""
    import soxr
    import torch

    mid = soxr.resample(window.mean(axis=0, keepdims=True).T, RATE, model.config.sampling_rate).T
    with torch.no_grad():
        out = model.encode(torch.from_numpy(np.ascontiguousarray(mid))[None], return_dict=True)
    return out.audio_codes[0, 0].numpy()


def _decode(model, codes_kt: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model.decode(torch.from_numpy(codes_kt.astype(np.int64))[None, None], [None]).audio_values[0].numpy()


def test_round_trip_through_the_token_file(codec, tmp_path: Path) -> None:
    model, fe = codec
    windows = _windows()
    codes = encode_windows(windows, RATE, model, fe, TokensConfig(batch_size=1))
    assert [c.shape for c in codes] == [(300, 4), (300, 4), (86, 4)]  # round(duration × 50 Hz)
    assert all(c.dtype == np.uint16 for c in codes)
    assert len(np.unique(codes[0][:, 0])) > 20  # real, varied tokens

    rows = write_track_tokens(tmp_path, "trk_0123456789ab", codes, codec=CODEC, codec_hash="f" * 64, frame_rate=50.0)
    assert [r["tokens_offset"] for r in rows] == [0, 300, 600]
    assert [r["tokens_frames"] for r in rows] == [300, 300, 86]
    assert rows[0]["tokens_path"] == "tokens/ffffffffffff/trk_0123456789ab.npy"
    assert {(r["tokens_streams"], r["tokens_frame_rate"], r["tokens_codec"]) for r in rows} == {(4, 50.0, CODEC)}

    stored = np.load(tmp_path / rows[0]["tokens_path"], mmap_mode="r")
    assert stored.dtype == np.uint16 and stored.shape == (686, 4)
    for window, row in zip(windows, rows):
        got = read_window_tokens(tmp_path, row)
        direct = _direct_encode(model, window)  # one frame more for the partial window (86.5 → 87)
        assert direct.shape[1] - got.shape[0] in (0, 1)
        # Batch 1 runs the codec's own computation on the same float32 samples and shapes (an all-ones padding
        # mask changes nothing), in this process: the tokens are identical, not merely close.
        np.testing.assert_array_equal(got.T, direct[:, : got.shape[0]])
        np.testing.assert_array_equal(decode_tokens(got, model), _decode(model, direct[:, : got.shape[0]]))

    # Byte budget: 4 codebooks × 2 bytes × 50 Hz = 400 B per second of audio, plus the .npy header.
    size = (tmp_path / rows[0]["tokens_path"]).stat().st_size
    header = size - 686 * 4 * 2
    assert header in (128, 256)  # .npy format 1.0 header, whatever the track's length
    seconds = sum(w.shape[1] for w in windows) / RATE
    assert (size - header) / seconds == pytest.approx(400, rel=0.005)


def test_batches_same_frames_and_nearly_same_tokens(codec) -> None:
    model, fe = codec
    windows = _windows()
    single = encode_windows(windows, RATE, model, fe, TokensConfig(batch_size=1))
    batched = encode_windows(windows, RATE, model, fe, TokensConfig(batch_size=8))
    for a, b in zip(single, batched):
        assert a.shape == b.shape
        # Batched convolutions round differently; only near-ties of the random codebooks may flip.
        assert np.mean(a == b) > 0.95


def test_stereo_streams_are_ordered_like_transformers_musicgen(codec) -> None:
    import torch

    from tunekit.models.musicgen import load_musicgen

    _, fe = codec
    musicgen, _ = load_musicgen("facebook/musicgen-stereo-small", tiny=True)
    encoder = _with_codewords(musicgen.audio_encoder, seed=1)
    rng = np.random.default_rng(1)
    window = (0.1 * rng.standard_normal((2, 2 * 32000))).astype(np.float32)
    mine = encode_windows([window], 32000, encoder, fe, TokensConfig(stereo=True))[0]  # (frames, 8)
    # transformers' own stereo path: encode left and right, interleave into decoder input ids.
    kwargs = musicgen._prepare_audio_encoder_kwargs_for_generation(torch.from_numpy(window)[None], {})
    ref = kwargs["decoder_input_ids"].reshape(musicgen.decoder.num_codebooks, -1).numpy()
    assert mine.shape == (100, 8) and ref.shape == (8, 100)
    agreement = (mine.T == ref).mean(axis=1)
    assert (agreement > 0.95).all(), agreement
    swapped = (mine.T[[1, 0, 3, 2, 5, 4, 7, 6]] == ref).mean(axis=1)
    assert (swapped < 0.2).all(), swapped  # left and right really differ, so the order is tested
    audio = decode_tokens(mine, encoder)
    assert audio.shape == (2, 2 * 32000)
    np.testing.assert_array_equal(audio[1], decode_tokens(mine[:, 1::2], encoder, stereo=False)[0])


def test_codec_and_config_checks(codec) -> None:
    from tunekit.errors import ConfigError, StageUnavailableError

    model, fe = codec
    big = SimpleNamespace(config=copy.deepcopy(model.config))
    big.config.codebook_size = 1 << 17
    with pytest.raises(StageUnavailableError, match="uint16"):
        tok.codec_info(big)
    chunked = SimpleNamespace(config=copy.deepcopy(model.config))
    chunked.config.chunk_length_s, chunked.config.overlap = 1.0, 0.01
    with pytest.raises(StageUnavailableError, match="chunk"):
        tok.codec_info(chunked)
    with pytest.raises(ConfigError, match="tokens.bandwidth"):
        encode_windows(_windows()[:1], RATE, model, fe, TokensConfig(bandwidth=6.0))
    problems = TokensConfig(batch_size=0, bandwidth=-1.0).problems("tokens")
    assert any(p.startswith("tokens.batch_size") for p in problems)
    assert any(p.startswith("tokens.bandwidth") for p in problems)
    assert TokensConfig().problems() == []


def test_every_codec_problem_is_reported_at_once(codec) -> None:
    model, _ = codec
    config = copy.deepcopy(model.config)
    config.chunk_length_s, config.overlap = 1.0, 0.01
    config.codebook_size = 1 << 17
    problems = tok.codec_problems(config, 24000, TokensConfig(bandwidth=6.0))
    assert len(problems) == 4, problems
    assert "chunks" in problems[0] and "uint16" in problems[1]
    assert problems[2].startswith("tokens.bandwidth=6.0 is not one of the bandwidths") and "[2.2]" in problems[2]
    assert "24000 Hz" in problems[3] and "32000 Hz" in problems[3]
    assert tok.codec_problems(model.config, 32000, TokensConfig()) == []


def test_preflight_checks_settings_against_the_codec_files(codec) -> None:
    """What `tunekit prep` checks before any work: the codec's own config decides which bandwidths exist."""
    from tunekit.models.config import ModelsConfig

    models = ModelsConfig(tiny=True)
    assert tok.tokens_preflight(TokensConfig(), models) == []
    assert tok.tokens_preflight(TokensConfig(bandwidth=2.2), models) == []
    assert tok.tokens_preflight(TokensConfig(enabled=False, bandwidth=1.0), models) == []
    (problem,) = tok.tokens_preflight(TokensConfig(bandwidth=1.0), models)
    assert problem.startswith("tokens.bandwidth=1.0 is not one of the bandwidths of codec facebook/encodec_32khz")
    assert "[2.2]" in problem


def test_prep_stage_writes_one_file_per_track(codec, tmp_path: Path, monkeypatch) -> None:
    from tunekit.models.config import ModelsConfig
    from tunekit.prep.rows import StageContext, TrackRow, WindowRow, models_root

    model, fe = codec
    models = ModelsConfig(tiny=True)
    monkeypatch.setitem(tok._loaded, (CODEC, True, models_root(models), "cpu"), (model, fe))
    out = tmp_path / "out"
    (out / "audio").mkdir(parents=True)
    track_audio = np.concatenate(_windows(), axis=1)
    sf.write(out / "audio" / "trk_0123456789ab.flac", track_audio.T, RATE, subtype="PCM_24")
    starts = [0, 6 * RATE, 12 * RATE]
    lengths = [6 * RATE, 6 * RATE, track_audio.shape[1] - 12 * RATE]
    windows = [
        WindowRow(window_id=f"trk_0123456789ab_{i:04d}", track_id="trk_0123456789ab", window_index=i,
                  audio_path="audio/trk_0123456789ab.flac", offset_s=s / RATE, duration_s=n / RATE,
                  start_s=s / RATE, offset_frames=s, frames=n, sample_rate=RATE, audio_key=f"key{i}")
        for i, (s, n) in enumerate(zip(starts, lengths))
    ]
    track = TrackRow(track_id="trk_0123456789ab", source_path="a.wav", windows=windows)
    cfg = TokensConfig(device="cpu", batch_size=4)
    digest = tok.tokens_model_digest(cfg, models)
    ctx = StageContext(corpus_dir=str(tmp_path), out_dir=str(out), cache_dir=str(tmp_path / "cache"),
                       stage="tokens", models=models, model_digest=digest)

    mapped = tok.tokenize_window(windows[:2], cfg, ctx) + [tok.tokenize_window(windows[2], cfg, ctx)]
    assert all(Path(w.extra[tok.WINDOW_TOKENS_KEY]).is_file() for w in mapped)
    (done,) = tok.write_tokens([TrackRow(**{**track.__dict__, "windows": mapped})], cfg, ctx)
    extras = [w.extra for w in done.windows]
    assert all(tok.WINDOW_TOKENS_KEY not in e for e in extras)
    assert {e["tokens_path"] for e in extras} == {f"tokens/{digest[:12]}/trk_0123456789ab.npy"}
    assert [e["tokens_offset"] for e in extras] == [0, 300, 600]
    assert [e["tokens_frames"] for e in extras] == [300, 300, 86]
    assert {e["tokens_codec_hash"] for e in extras} == {digest}

    # The stored tokens are those of the stored (24-bit FLAC) audio of each window.
    flac, _ = sf.read(out / "audio" / "trk_0123456789ab.flac", dtype="float32", always_2d=True)
    pieces = [np.ascontiguousarray(flac[s:s + n].T) for s, n in zip(starts, lengths)]
    expected = encode_windows(pieces, RATE, model, fe, TokensConfig(batch_size=1))
    for e, want in zip(extras, expected):
        assert np.mean(read_window_tokens(out, e) == want) > 0.95

    # A rerun with the same tokens leaves the file untouched.
    path = out / extras[0]["tokens_path"]
    before = path.stat().st_mtime_ns
    tok.write_tokens([TrackRow(**{**track.__dict__, "windows": mapped})], cfg, ctx)
    assert path.stat().st_mtime_ns == before
    assert tok.tokens_model_digest(TokensConfig(enabled=False), models) == ""

"""Real-size models on a CUDA GPU: what a lent GPU machine runs (`pytest -m gpu`; never part of `make test`).

Random weights in the real architectures (the cost and memory of trained ones): a LoRA step of a
musicgen-small-shaped model on 30 s crops, Demucs (htdemucs shape) on 30 s of stereo, EnCodec 32 kHz tokens of
30 s windows, and CLAP (HTSAT-base shape) audio embeddings. Each GPU result is checked against the same code
on the CPU where the numbers can be compared. Skipped cleanly without CUDA.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

RATE = 44100


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    """(2, N) float32 stereo test audio: two tones, a gated third and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * 110 * t) + 0.2 * np.sin(2 * np.pi * 440 * t) * (t % 0.5 < 0.25)
    return (np.stack([x, 0.9 * x]) + 0.03 * rng.standard_normal((2, t.size))).astype(np.float32)


def _musicgen_small_shape(out: Path) -> Path:
    """A random musicgen-small (24 x 1024 decoder, T5-base text encoder) saved as a checkpoint folder, with the
    tiny model's tokenizer and codec config (the codec does not run in training: tokens are precomputed)."""
    import shutil

    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    tiny = Path(resolve("facebook/musicgen-small", tiny=True))
    cfg = MusicgenConfig.from_pretrained(tiny)
    dec, te = cfg.decoder, cfg.text_encoder
    dec.num_hidden_layers, dec.hidden_size, dec.num_attention_heads, dec.ffn_dim = 24, 1024, 16, 4096
    te.num_layers, te.d_model, te.num_heads, te.d_ff, te.d_kv = 12, 768, 12, 3072, 64
    torch.manual_seed(0)
    MusicgenForConditionalGeneration(cfg).save_pretrained(out)
    for f in tiny.iterdir():
        if f.is_file() and f.name not in ("config.json", "generation_config.json") and not f.name.startswith(
            ("model", "tunekit")
        ):
            shutil.copy(f, out / f.name)
    return out


def _token_dataset(root: Path, seconds: float, n_windows: int = 8) -> Path:
    """A prep output with random EnCodec-like codes (4 x 2048 at 50 Hz), one window per track."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    frames = int(seconds * 50)
    (root / "tokens" / "gpu").mkdir(parents=True)
    rows = []
    for t in range(n_windows):
        tid = f"trk_{t:012x}"
        np.save(root / "tokens" / "gpu" / f"{tid}.npy", rng.integers(0, 2048, (frames, 4)).astype(np.uint16))
        rows.append({
            "window_id": f"{tid}_0000", "track_id": tid, "split": "valid" if t == n_windows - 1 else "train",
            "caption": "lofi hip hop with piano", "captions": ["lofi hip hop with piano", "a calm beat"],
            "tokens_path": f"tokens/gpu/{tid}.npy", "tokens_offset": 0, "tokens_frames": frames,
            "tokens_codec": "facebook/encodec_32khz", "tokens_codec_hash": "gpu", "tokens_frame_rate": 50.0,
            "tokens_streams": 4, "license": "CC0-1.0",
        })
    pq.write_table(pa.Table.from_pylist(rows), root / "windows.parquet")
    return root


def test_musicgen_small_lora_steps_on_30_s_crops(tmp_path):
    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig
    from tunekit.train.run import run_train

    model = _musicgen_small_shape(tmp_path / "musicgen-small-shape")
    data = _token_dataset(tmp_path / "data", seconds=30.0)
    out = tmp_path / "run"
    torch.cuda.reset_peak_memory_stats()
    cfg = load_config("train", [
        f"data.path={data}", f"out={out}", f"model.name={model}", "models.tiny=false", "method=lora", "logger=none",
        "trainer.device=cuda", "trainer.precision=bf16", "trainer.batch_size=2", "trainer.grad_accum=1",
        "trainer.max_steps=3", "trainer.eval_every=0", "trainer.save_every=3", "eval.n_prompts=0",
        "data.crop_seconds=30",
    ], TrainConfig)
    assert run_train(cfg) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(np.isfinite(losses)), rows
    # Random codes: the loss starts near ln(2048) = 7.62, the entropy of a uniform guess.
    assert abs(losses[0] - np.log(2048)) < 1.0, losses
    peak = torch.cuda.max_memory_allocated() / 2**30
    assert peak < 40, f"{peak:.1f} GiB for a LoRA step at batch 2 x 30 s: more than a 40 GB card"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_demucs_separates_30_s_on_the_gpu_as_on_the_cpu():
    from demucs.htdemucs import HTDemucs

    from tunekit.prep.separate import SeparateConfig, separate

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], segment=Fraction(39, 5)).eval()
    mix = _music(30.0)
    gpu = separate(mix, model.to("cuda"), SeparateConfig(device="cuda"))
    assert gpu.instrumental.shape == mix.shape and np.isfinite(gpu.instrumental).all()
    # instrumental = mix - vocals, exactly as on the CPU path
    np.testing.assert_allclose(gpu.instrumental + gpu.vocals, mix, atol=1e-5)
    cpu = separate(mix[:, : 10 * RATE], model.to("cpu"), SeparateConfig(device="cpu"))
    head = gpu.vocals[:, : 10 * RATE]
    err = np.abs(cpu.vocals - head).max() / max(np.abs(cpu.vocals).max(), 1e-9)
    # TF32 convolutions and another FFT: agreement to ~1e-3 of the signal, not bitwise
    assert err < 1e-2, f"GPU vs CPU vocals differ by {err:.2e} of their peak"


def test_encodec_tokens_of_30_s_windows_on_the_gpu_match_the_cpu():
    from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

    from tunekit.models.encodec import ENCODEC_32KHZ

    from tunekit.prep.tokens import TokensConfig, encode_windows

    torch.manual_seed(0)
    model = EncodecModel(EncodecConfig(**ENCODEC_32KHZ)).eval()
    fe = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000)
    windows = [_music(30.0, seed=i) for i in range(4)]
    gpu = encode_windows(windows, RATE, model.to("cuda"), fe, TokensConfig(batch_size=4, device="cuda"))
    assert [c.shape for c in gpu] == [(1500, 4)] * 4
    cpu = encode_windows(windows[:1], RATE, model.to("cpu"), fe, TokensConfig(batch_size=1, device="cpu"))
    # A residual quantiser flips a code when a latent sits on a Voronoi boundary within rounding: nearly all agree.
    same = float((cpu[0] == gpu[0]).mean())
    assert same > 0.95, f"only {same:.1%} of the first codebook's tokens agree between GPU and CPU"


def test_clap_embeds_10_s_windows_on_the_gpu_as_on_the_cpu():
    from transformers import ClapAudioConfig, ClapConfig, ClapModel, ClapProcessor, ClapTextConfig

    from tunekit.models.embedders import ClapEmbedder
    from tunekit.models.registry import resolve

    processor = ClapProcessor.from_pretrained(resolve("laion/larger_clap_music", tiny=True))
    audio = ClapAudioConfig(depths=[2, 2, 12, 2], patch_embeds_hidden_size=128, hidden_size=1024,
                            num_attention_heads=[4, 8, 16, 32], enable_fusion=False, projection_dim=512)
    text = ClapTextConfig(vocab_size=len(processor.tokenizer), projection_dim=512,
                          pad_token_id=processor.tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=512)).eval()
    clips = [_music(10.0, seed=i).mean(axis=0) for i in range(4)]
    gpu = ClapEmbedder(model.to("cuda"), processor, "htsat-base-shape", "gpu", "cuda")
    a = gpu.embed_windows([gpu.windows(c[None], RATE)[0] for c in clips])
    cpu = ClapEmbedder(model.to("cpu"), processor, "htsat-base-shape", "cpu", "cpu")
    b = cpu.embed_windows([cpu.windows(c[None], RATE)[0] for c in clips])
    assert a.shape == b.shape == (4, 512)
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999, f"GPU vs CPU CLAP embeddings: cosine {cos.min():.5f}"

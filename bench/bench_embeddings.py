"""Embedding extraction throughput (× real time) of the FAD embeddings on their real architectures.

    .venv/bin/python bench/bench_embeddings.py                       # CPU, 4 clips of 10 s at 44.1 kHz
    .venv/bin/python bench/bench_embeddings.py --device cuda --clips 32 --batch-size 16
    .venv/bin/python bench/bench_embeddings.py --models vggish clap --seconds 30

Random weights (the cost of trained ones): VGGish at its published size (conv 64-128-256-256-512-512,
FC 4096-4096-128), CLAP with laion/larger_clap_music's configuration (HTSAT-base audio tower, RoBERTa
text tower, 512-d projection, 48 kHz / 10 s front end), EnCodec with facebook/encodec_32khz's
configuration. Each runs through `tunekit.eval.embeddings.embed_items` exactly as `tunekit eval` does:
decoding excluded, resampling (soxr), windowing, feature extraction and the forward pass included.
One warm-up clip precedes the timed run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

RATE = 44100

# facebook/encodec_32khz config.json (MusicGen's audio tokenizer).
ENCODEC_32KHZ = dict(
    audio_channels=1, chunk_length_s=None, codebook_dim=128, codebook_size=2048, compress=2, dilation_growth_rate=2,
    hidden_size=128, kernel_size=7, last_kernel_size=7, norm_type="weight_norm", normalize=False, num_filters=64,
    num_lstm_layers=2, num_residual_layers=1, overlap=None, pad_mode="reflect", residual_kernel_size=3,
    sampling_rate=32000, target_bandwidths=[2.2], trim_right_ratio=1.0, upsampling_ratios=[8, 5, 4, 4],
    use_causal_conv=False, use_conv_shortcut=False,
)
# laion/larger_clap_music config.json (what it sets; the rest are the ClapConfig defaults).
CLAP_MUSIC = dict(
    audio_config=dict(depths=[2, 2, 12, 2], hidden_size=1024, patch_embeds_hidden_size=128),
    text_config={}, projection_dim=512, projection_hidden_act="relu", logit_scale_init_value=14.285714285714285,
)


def build(name: str, device: str):
    """An embedder of the real architecture with random weights."""
    import torch

    from tunekit.eval.embeddings import ClapEmbedder, EncodecEmbedder, VggishEmbedder

    torch.manual_seed(0)
    if name == "vggish":
        from tunekit.models.vggish import build_vggish

        return VggishEmbedder(build_vggish().eval().to(device), "vggish (random)", "bench", device)
    if name == "encodec":
        from transformers import EncodecConfig, EncodecModel

        model = EncodecModel(EncodecConfig(**ENCODEC_32KHZ)).eval().to(device)
        return EncodecEmbedder(model, "encodec_32khz-shaped (random)", "bench", device)
    if name == "clap":
        from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

        from tunekit.models.tiny import tiny_roberta_tokenizer

        model = ClapModel(ClapConfig(**CLAP_MUSIC)).eval().to(device)
        fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10,
                                  fft_window_size=1024, frequency_min=50, frequency_max=14000, truncation="rand_trunc",
                                  padding="repeatpad")
        # The text tower is not timed; any RoBERTa tokenizer completes the processor offline.
        processor = ClapProcessor(feature_extractor=fe, tokenizer=tiny_roberta_tokenizer())
        return ClapEmbedder(model, processor, "larger_clap_music-shaped (random)",
                            "bench", device)
    raise SystemExit(f"unknown model {name!r}")


def clips(n: int, seconds: float, seed: int = 0) -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(f"c{i}", (0.1 * rng.standard_normal((2, int(seconds * RATE)))).astype(np.float32), RATE) for i in range(n)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["vggish", "clap", "encodec"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()

    import torch

    from tunekit.eval.embeddings import embed_items

    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{platform.processor() or 'cpu'}"
    print(f"device: {args.device} ({where}), torch threads {torch.get_num_threads()}, "
          f"{args.clips} clips × {args.seconds:g} s stereo 44.1 kHz, batch {args.batch_size}\n")
    print("| embedding | params | frames/clip | dim | wall s | × real time |")
    print("|---|---:|---:|---:|---:|---:|")
    data = clips(args.clips, args.seconds)
    for name in args.models:
        e = build(name, args.device)
        params = sum(p.numel() for p in e.model.parameters())
        embed_items([e], data[:1], batch_size=args.batch_size)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = embed_items([e], data, batch_size=args.batch_size)[e.name]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        frames = np.mean([len(f) for f in out.values()])
        print(f"| {name} | {params / 1e6:.1f}M | {frames:g} | {e.dim} | {wall:.2f} | "
              f"{args.clips * args.seconds / wall:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tagging accuracy and throughput on the synthetic demo corpus.

    python bench/bench_tagging.py                      # renders the default demo corpus into data/demo
    python bench/bench_tagging.py --corpus data/demo --clap-seconds 30

Renders (or reuses) the demo corpus, runs the Essentia features on every whole track and on its 30 s
windows, and prints a markdown table of estimates against `ground_truth.csv`: tempo within 4 % (octave
errors counted separately), key exact, and how many of the values the confidence thresholds let a
caption state. Then measures throughput (x real time) of the Essentia features and of CLAP zero-shot
with the real laion/larger_clap_music architecture (random weights cost the same as the real ones).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from tunekit.audio.io import read_audio
from tunekit.prep.tag import TagConfig
from tunekit.prep.tag_dsp import essentia_features, octave_related, same_tempo, track_dsp_tags, window_dsp_tags

# laion/larger_clap_music: HTSAT-base audio tower (no fusion), RoBERTa-base text tower, 512-d joint space.
LARGER_CLAP_MUSIC = {
    "audio_config": {
        "depths": [2, 2, 12, 2], "num_attention_heads": [4, 8, 16, 32], "patch_embeds_hidden_size": 128,
        "hidden_size": 1024, "window_size": 8, "spec_size": 256, "num_mel_bins": 64, "patch_size": 4,
        "patch_stride": [4, 4], "mlp_ratio": 4.0, "enable_fusion": False, "projection_dim": 512,
    },
    "text_config": {
        "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
        "intermediate_size": 3072, "max_position_embeddings": 514, "type_vocab_size": 1, "projection_dim": 512,
    },
    "projection_dim": 512,
}  # fmt: skip

KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def key_error(est: str | None, truth: str) -> str:
    """'ok', or the kind of key error: relative, parallel, fifth, other, none."""
    if est is None:
        return "none"
    if est == truth:
        return "ok"
    (et, es), (tt, ts) = est.split(), truth.split()
    d = (KEY_NAMES.index(et) - KEY_NAMES.index(tt)) % 12
    if es != ts and ((ts == "major" and d == 9) or (ts == "minor" and d == 3)):
        return "relative"
    if es != ts and d == 0:
        return "parallel"
    if es == ts and d in (5, 7):
        return "fifth"
    return "other"


def tempo_error(est: float | None, truth: float) -> str:
    """'ok' (within 4 %), 'octave' (x2, x1/2, x3, x1/3, x3/2, x2/3) or 'wrong'."""
    if est is None:
        return "none"
    if same_tempo(est, truth):
        return "ok"
    return "octave" if octave_related(est, truth) else "wrong"


def evaluate(corpus: Path, cfg: TagConfig, window_s: float = 30.0) -> dict:
    """Essentia on every track and window of the corpus; rows and accuracy figures."""
    truth = list(csv.DictReader(open(corpus / "ground_truth.csv", encoding="utf-8")))
    rows, windows = [], []
    audio_s = compute_s = cpu_s = 0.0
    for t in truth:
        audio, rate = read_audio(corpus / t["path"])
        t0, c0 = time.perf_counter(), time.process_time()
        feats = essentia_features(audio, rate, cfg.key_profile)
        compute_s += time.perf_counter() - t0
        cpu_s += time.process_time() - c0
        audio_s += audio.shape[1] / rate
        hop = int(window_s * rate)
        wfeats = []
        for start in range(0, audio.shape[1], hop):
            piece = audio[:, start : start + hop]
            if piece.shape[1] < 10 * rate:
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            wfeats.append(essentia_features(piece, rate, cfg.key_profile))
            compute_s += time.perf_counter() - t0
            cpu_s += time.process_time() - c0
            audio_s += piece.shape[1] / rate
        tags = track_dsp_tags(feats, wfeats, cfg)
        bpm = float(t["bpm"])
        rows.append({"path": t["path"], "style": t["style"], "bpm": bpm, "key": t["key"], "feats": feats, "tags": tags,
                     "tempo": tempo_error(feats["bpm"], bpm), "keyerr": key_error(feats["key"], t["key"])})  # fmt: skip
        for wf in wfeats:
            ruled = window_dsp_tags(wf, tags, cfg)
            windows.append({"raw_tempo": tempo_error(wf["bpm"], bpm), "raw_key": wf["key"] == t["key"],
                            "tempo": tempo_error(ruled["bpm"], bpm) if not ruled["bpm_uncertain"] else "none",
                            "key": (ruled["key"] == t["key"]) if not ruled["key_uncertain"] else None,
                            "stated_bpm": not ruled["bpm_uncertain"], "stated_key": not ruled["key_uncertain"]})  # fmt: skip
    return {"rows": rows, "windows": windows, "audio_s": audio_s, "compute_s": compute_s, "cpu_s": cpu_s}


def report(result: dict, cfg: TagConfig) -> None:
    rows, windows = result["rows"], result["windows"]
    print("| track | style | bpm (truth) | bpm (est) | confidence | tempo | key (truth) | key (est) | strength | key |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["feats"]
        print(f"| {r['path']} | {r['style']} | {r['bpm']:.0f} | {f['bpm']} | {f['bpm_confidence']:.2f} | {r['tempo']} "
              f"| {r['key']} | {f['key']} | {f['key_strength']:.3f} | {r['keyerr']} |")  # fmt: skip
    n = len(rows)
    tempo_ok = sum(r["tempo"] == "ok" for r in rows)
    octave = sum(r["tempo"] == "octave" for r in rows)
    key_ok = sum(r["keyerr"] == "ok" for r in rows)
    stated_bpm = [r for r in rows if not r["tags"]["bpm_uncertain"]]
    stated_key = [r for r in rows if not r["tags"]["key_uncertain"]]
    print()
    print(f"Tracks: {n}. Tempo within 4 %: {tempo_ok}/{n} ({100 * tempo_ok / n:.0f} %), octave errors: {octave}, "
          f"other: {n - tempo_ok - octave}. Key exact: {key_ok}/{n} ({100 * key_ok / n:.0f} %).")  # fmt: skip
    print(f"Stated in captions (tempo confidence >= {cfg.tempo_min_confidence}, or >= {cfg.tempo_confirm_confidence} "
          f"confirmed by the windows; key strength >= {cfg.key_min_strength}): "
          f"tempo {len(stated_bpm)}/{n} ({sum(r['tempo'] == 'ok' for r in stated_bpm)} right), "
          f"key {len(stated_key)}/{n} ({sum(r['keyerr'] == 'ok' for r in stated_key)} right).")  # fmt: skip
    failures = [r for r in rows if r["tempo"] != "ok" or r["keyerr"] != "ok"]
    if failures:
        print("Failures: " + "; ".join(f"{r['path']} (tempo {r['tempo']}, key {r['keyerr']})" for r in failures))
    w = len(windows)
    if w:
        raw_t = sum(x["raw_tempo"] == "ok" for x in windows)
        raw_k = sum(x["raw_key"] for x in windows)
        st_t = [x for x in windows if x["stated_bpm"]]
        st_k = [x for x in windows if x["stated_key"]]
        print(f"30 s windows: {w}. On their own: tempo {raw_t}/{w}, key {raw_k}/{w}. After the track rule: tempo "
              f"stated {len(st_t)}/{w}, right {sum(x['tempo'] == 'ok' for x in st_t)}; key stated {len(st_k)}/{w}, "
              f"right {sum(bool(x['key']) for x in st_k)}.")  # fmt: skip
    print(f"Essentia throughput (one process, whole tracks + 30 s windows): {result['audio_s']:.0f} s of audio in "
          f"{result['compute_s']:.1f} s wall = {result['audio_s'] / result['compute_s']:.1f}x real time; "
          f"{result['cpu_s']:.1f} s CPU = {result['audio_s'] / result['cpu_s']:.1f}x real time per core.")  # fmt: skip


def bench_clap(seconds: float, repeats: int = 2) -> None:
    """CLAP zero-shot throughput with the real larger_clap_music architecture (random weights)."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from tunekit.prep.tag_semantic import clap_audio_embedding

    config = ClapConfig(**LARGER_CLAP_MUSIC)
    torch.manual_seed(0)
    model = ClapModel(config).eval()
    n_audio = sum(p.numel() for p in model.audio_model.parameters()) + sum(p.numel() for p in model.audio_projection.parameters())
    n_total = sum(p.numel() for p in model.parameters())
    fe = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, max_length_s=10, fft_window_size=1024,
                              frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad")  # fmt: skip

    class Processor:
        feature_extractor = fe

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, int(44100 * seconds)))).astype(np.float32)
    clap_audio_embedding(x[:, : 44100 * 10], 44100, model, Processor())  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        clap_audio_embedding(x, 44100, model, Processor())
    dt = (time.perf_counter() - t0) / repeats
    pieces = [np.zeros(480000, np.float32)] * int(np.ceil(seconds / 10))
    t0 = time.perf_counter()
    fe(pieces, sampling_rate=48000, return_tensors="pt")
    fe_s = time.perf_counter() - t0
    print(f"CLAP (larger_clap_music architecture, {n_total / 1e6:.0f}M parameters, audio tower {n_audio / 1e6:.0f}M), "
          f"torch threads {torch.get_num_threads()}: {seconds:.0f} s of 44.1 kHz stereo -> 48 kHz, "
          f"{len(pieces)} x 10 s pieces: {dt:.2f} s per window = {seconds / dt:.1f}x real time "
          f"(of which mel features {fe_s:.2f} s).")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="data/demo", help="demo corpus folder (rendered when missing)")
    parser.add_argument("--clap-seconds", type=float, default=30.0, help="window length for the CLAP timing")
    parser.add_argument("--no-clap", action="store_true", help="skip the CLAP timing")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / "ground_truth.csv").is_file():
        from tunekit.corpus.synth import SynthConfig, synthesize

        synthesize(SynthConfig(out=str(corpus), quiet=True))
    cfg = TagConfig()
    report(evaluate(corpus, cfg), cfg)
    if not args.no_clap:
        bench_clap(args.clap_seconds)


if __name__ == "__main__":
    main()

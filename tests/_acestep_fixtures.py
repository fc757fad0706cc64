"""A small ACE-Step prep output in the exact layout of the contract (data/README.md, "Prep output"), made with a
tiny pipeline's own conditioning, and the config / child-process helpers of the ACE-Step training tests."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _train_fixtures import CAPTIONS, GRADIENTS_ENV, capture_first_step_gradients, child_env, torchrun

def _variant_ids() -> dict[str, str]:
    """turbo/base/sft -> the registry id of that ACE-Step variant (by its tiny stand-in's name)."""
    from tunekit.models.registry import MODELS

    return {m.tiny_name.removeprefix("acestep-"): m.id for m in MODELS if m.loader == "acestep"}


IDS = _variant_ids()
LATENT_RATE = 25.0
LYRICS = ["[Instrumental]", "[verse]\nslow lights over the water\n[chorus]\nhold on"]


def make_latent_dataset(
    root: Path,
    *,
    variant: str = "turbo",
    tracks: tuple[str, ...] = ("train", "train", "train", "valid", "test"),
    window_seconds: float = 2.0,
    windows_per_track: int = 2,
    last_partial: float | None = 1.0,
    cond_dtype: str = "float32",
    seed: int = 0,
) -> Path:
    """Write an ACE-Step prep output: windows.parquet, tracks.parquet, latents/<digest12>/<track>.safetensors
    (mean, std, cond per window), latents/<digest12>/model.safetensors, summary.json and attribution.csv.

    Conditions are the tiny pipeline's `encode_conditions` of each window's caption, lyrics and duration; the
    latent mean and std are random (std in (0.05, 0.25)). Windows of one track share caption and lyrics, so
    its whole windows share one (T, L).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from safetensors.torch import save_file

    from tunekit.models.acestep import encode_conditions, load_acestep, null_condition, variant_of
    from tunekit.models.digest import model_digest
    from tunekit.models.registry import resolve

    pipe = load_acestep(IDS[variant], tiny=True)
    assert variant_of(pipe) == variant
    digest = model_digest(resolve(IDS[variant], tiny=True))
    channels = pipe.transformer.config.audio_acoustic_hidden_dim
    hidden = pipe.condition_encoder.null_condition_emb.shape[-1]
    folder = root / "latents" / digest[:12]
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"model": IDS[variant], "digest": digest, "variant": variant}
    save_file({"null_condition": null_condition(pipe).contiguous(),
               "silence_latent": pipe.condition_encoder.silence_latent.detach().float().contiguous()},
              str(folder / "model.safetensors"),
              metadata={**meta, "sample_rate": "48000", "latent_rate": f"{LATENT_RATE:g}", "channels": str(channels),
                        "hidden": str(hidden)})
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cond_dtype]
    rng = np.random.default_rng(seed)
    wrows: list[dict[str, Any]] = []
    trows: list[dict[str, Any]] = []
    for i, split in enumerate(tracks):
        tid = f"trk_{i:012x}"
        caption, lyrics = f"{CAPTIONS[i % len(CAPTIONS)]}", LYRICS[i % len(LYRICS)]
        licence = "CC-BY-4.0" if i % 2 == 0 else "CC0-1.0"
        rel = f"latents/{digest[:12]}/{tid}.safetensors"
        durations = [window_seconds] * windows_per_track + ([last_partial] if last_partial else [])
        tensors, offset = {}, 0.0
        for w, seconds in enumerate(durations):
            wid = f"{tid}_{w:04d}"
            frames = int(round(seconds * LATENT_RATE))
            cond = encode_conditions(pipe, [caption], [lyrics], seconds=window_seconds)[0].states
            tensors[f"{wid}/mean"] = torch.from_numpy(rng.standard_normal((frames, channels)).astype(np.float32))
            tensors[f"{wid}/std"] = torch.from_numpy(rng.uniform(0.05, 0.25, (frames, channels)).astype(np.float32))
            tensors[f"{wid}/cond"] = cond.to(dtype).contiguous()
            wrows.append({
                "window_id": wid, "track_id": tid, "split": split, "audio_path": f"audio/{tid}.flac",
                "offset_s": offset, "duration_s": seconds, "license": licence, "caption": caption,
                "captions": [caption], "lyrics": lyrics, "language": "en", "latents_file": rel,
                "latent_frames": frames, "cond_length": int(cond.shape[0]),
            })
            offset += seconds
        save_file(tensors, str(root / rel), metadata=meta)
        trows.append({"track_id": tid, "status": "ok", "split": split, "license": licence, "artist": f"Artist {i}",
                      "title": f"Track {i}", "lyrics": lyrics, "lyrics_source": "metadata", "language": "en",
                      "attribution": f"Track {i} by Artist {i} (CC BY 4.0)" if i % 2 == 0 else ""})
    pq.write_table(pa.Table.from_pylist(wrows), root / "windows.parquet")
    pq.write_table(pa.Table.from_pylist(trows), root / "tracks.parquet")
    (root / "summary.json").write_text(json.dumps({"pipeline": "acestep", "latents": meta,
                                                   "config": {"pipeline_name": "acestep"}}))
    with open(root / "attribution.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["track_id", "title", "artist", "license", "credit"])
        w.writeheader()
        for t in trows:
            if t["attribution"]:
                w.writerow({"track_id": t["track_id"], "title": t["title"], "artist": t["artist"],
                            "license": t["license"], "credit": t["attribution"]})
    return root


BASE = [
    "models=tiny",
    "logger=none",
    "trainer.device=cpu",
    "trainer.precision=fp32",
    "trainer.max_steps=4",
    "trainer.warmup=0",
    "trainer.eval_every=0",
    "trainer.save_every=0",
    "trainer.log_every=1",
    "eval.n_prompts=0",
]


def acestep_cfg(data: Path, out: Path, *overrides: str, variant: str = "turbo") -> Any:
    """A validated TrainConfig for a tiny ACE-Step CPU run on `data`, written to `out`."""
    from tunekit.config.compose import load_config
    from tunekit.train.config import TrainConfig

    return load_config("train", [f"model=acestep-1.5-{variant}", *BASE, f"data.path={data}", f"out={out}",
                                 *overrides], TrainConfig)


def acestep_process(data: Path, out: Path, *overrides: str) -> subprocess.Popen:
    """`train_acestep` in a child process with one thread, for kill-and-resume tests."""
    return subprocess.Popen([sys.executable, __file__, str(data), str(out), *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(), text=True)


def torchrun_acestep(nproc: int, data: Path, out: Path, *overrides: str, gradients: Path | None = None
                     ) -> subprocess.CompletedProcess:
    """`train_acestep` on `nproc` CPU processes (DDP over gloo) launched by torchrun, one thread each; with
    `gradients`, every rank saves its first step's gradients there."""
    return torchrun(nproc, data, out, *overrides, gradients=gradients, script=__file__)


if __name__ == "__main__":
    import os

    import torch

    from tunekit.train.acestep import train_acestep

    torch.set_num_threads(1)
    if os.environ.get(GRADIENTS_ENV):
        capture_first_step_gradients(Path(os.environ[GRADIENTS_ENV]), int(os.environ.get("RANK", "0")),
                                     trainer_module="tunekit.train.acestep")
    raise SystemExit(train_acestep(acestep_cfg(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])))

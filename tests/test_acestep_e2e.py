"""ACE-Step 1.5 end to end on tiny models, through the `tunekit` entry point as a user runs it: a synthetic corpus
→ `prep pipeline=acestep` → `train recipe=demo-acestep` → `generate run=` → `eval run=`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


def tunekit(*argv: str) -> None:
    """Run one tunekit command in this process and require success."""
    from tunekit.cli.main import run

    assert run(list(argv)) == 0, argv


def test_prep_train_generate_eval(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    corpus, prep, run = tmp_path / "corpus", tmp_path / "prep", tmp_path / "run"
    tunekit("corpus", "synth", f"out={corpus}", "n_tracks=5", "min_seconds=12", "max_seconds=14", "workers=1",
            "quiet=true")
    tunekit("prep", "pipeline=acestep", f"corpus={corpus}", f"out={prep}", "models=tiny", "workers=1", "quiet=true",
            "window.seconds=6", "window.min_seconds=4", "tag.clap=false")
    summary = json.loads((prep / "summary.json").read_text())
    assert summary["pipeline"] == "acestep" and summary["status"] == "ok", summary.get("problems")

    tunekit("train", "recipe=demo-acestep", f"data={prep}", f"out={run}", "logger=none", "trainer.max_steps=6",
            "trainer.eval_every=3", "trainer.save_every=3", "trainer.log_every=3")
    config = (run / "config.yaml").read_text()
    assert "family: acestep" in config
    assert (run / "adapter" / "pytorch_lora_weights.safetensors").is_file()
    assert (run / "adapter" / "adapter_config.json").is_file()
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in losses if "loss" in r)

    out = tmp_path / "song.wav"
    tunekit("generate", f"run={run}", "prompt=a calm piano ballad", "lyrics=[verse] la la", "duration=1.5",
            f"out={out}", "models=tiny")
    audio, rate = sf.read(out, always_2d=True)
    assert rate == 48000 and audio.shape == (72000, 2) and np.isfinite(audio).all()
    assert json.loads(out.with_suffix(".json").read_text())["source"].endswith("adapter")

    # The run's adapter folder given as a LoRA made elsewhere, on the same base: the same audio.
    again = tmp_path / "again.wav"
    tunekit("generate", "model=acestep-1.5-turbo", f"adapter={run / 'adapter'}", "prompt=a calm piano ballad",
            "lyrics=[verse] la la", "duration=1.5", f"out={again}", "models=tiny")
    # Two separate loads of the same weights may reduce in another order (threads): equal within 1e-3 of the
    # peak; the base alone (no LoRA) is far further away, so a LoRA played at another strength would show.
    bare = tmp_path / "bare.wav"
    tunekit("generate", "model=acestep-1.5-turbo", "prompt=a calm piano ballad", "lyrics=[verse] la la",
            "duration=1.5", f"out={bare}", "models=tiny")
    peak = float(np.abs(audio).max())
    same = float(np.abs(sf.read(again, always_2d=True)[0] - audio).max())
    lora_effect = float(np.abs(sf.read(bare, always_2d=True)[0] - audio).max())
    assert same <= 1e-3 * peak < lora_effect / 10, (same, peak, lora_effect)
    # The turbo-trained LoRA on base: allowed, with the untested pairing recorded.
    other = tmp_path / "on-base.wav"
    tunekit("generate", f"run={run}", "model=acestep-1.5-base", "prompt=a calm piano ballad", "duration=1",
            f"out={other}", "models=tiny")
    assert "untested pairing" in json.loads(other.with_suffix(".json").read_text())["pairing"]

    tunekit("eval", f"run={run}", "models=tiny", "logger=none", "n_samples=2", "duration=2",
            "embeddings=[clap,vggish]", "reference_splits=[valid,test]", "bootstrap=50")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    for which in ("base", "finetuned"):
        for emb in ("clap", "vggish"):
            assert np.isfinite(metrics[which][emb]["fad"]) and np.isfinite(metrics[which][emb]["kad"])
    floor = metrics["reference"]["clap"]["reconstruction"]
    assert floor["codec"].startswith("acestep:") and np.isfinite(floor["fad"])  # the VAE round trip
    clips = sorted(Path(run / "eval" / "audio" / "finetuned").glob("*.wav"))
    assert len(clips) == 2 and all(sf.info(c).samplerate == 48000 for c in clips)

"""`tunekit train` end to end on the tiny MusicGen (CPU): a run's artefacts, overfitting, accumulation
equivalence, the NaN guard, full fine-tuning, pre-flight refusals and resume rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_fixtures import assert_same_steps, capture_first_step_gradients, make_dataset, train_cfg
from safetensors.torch import load_file

from tunekit.errors import ConfigError
from tunekit.train import checkpoint as ckpt
from tunekit.train.run import run_train

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("prep"), codes="random")


@pytest.fixture(scope="module")
def two_windows(tmp_path_factory) -> Path:
    return make_dataset(
        tmp_path_factory.mktemp("two"), tracks=("train", "valid"), windows_per_track=2, last_partial=None,
        codes="motif",
    )


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def lora_run(two_windows, tmp_path_factory) -> Path:
    """30 steps of LoRA (all targets) on two windows, with evaluations, samples and checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "lora"
    cfg = train_cfg(
        two_windows, out, "trainer.max_steps=30", "trainer.lr=5e-3", "method.targets=all", "trainer.cond_dropout=0",
        "model.dropout=0", "method.dropout=0", "trainer.eval_every=15", "trainer.save_every=10", "trainer.keep_last=2",
        "eval.n_prompts=1", "eval.seconds=0.5", "recipe_name=unit",
    )
    assert run_train(cfg) == 0
    return out


def test_loss_falls_when_overfitting_two_windows(lora_run):
    losses = [r["loss"] for r in _rows(lora_run) if "loss" in r]
    assert len(losses) == 30
    assert losses[0] == pytest.approx(np.log(2048), abs=0.3)  # an untrained model is ~uniform over 2048 codes
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    valid = [r["valid_loss"] for r in _rows(lora_run) if "valid_loss" in r]
    assert len(valid) == 2 and all(np.isfinite(valid))


def test_run_folder_has_config_checkpoints_samples_and_card(lora_run):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(lora_run / "config.yaml")
    assert cfg.trainer.max_steps == 30 and cfg.method.targets == "all"
    steps = [s for s, _ in ckpt.list_checkpoints(lora_run)]
    assert steps == [20, 30]  # keep_last=2 of 10, 20, 30
    last = lora_run / "checkpoints" / "step-0000030"
    state = json.loads((last / "state.json").read_text())
    assert state["step"] == 30 and state["data_position"] == 60
    expected = {"weights.safetensors", "optimizer.pt", "rng-rank0.safetensors", "state.json"}
    assert {p.name for p in last.iterdir()} >= expected
    torch.load(last / "optimizer.pt", weights_only=True)
    for step in (15, 30):
        folder = lora_run / "samples" / f"step-{step:07d}"
        prompts = json.loads((folder / "prompts.json").read_text())["prompts"]
        assert prompts == ["dark ambient drone with warm pads, variant 0"]  # the held-out track's caption
        import soundfile as sf

        info = sf.info(str(folder / "00.wav"))
        assert info.samplerate == 32000 and info.frames == 16000
    card = (lora_run / "README.md").read_text()
    for needle in ["facebook/musicgen-small", "recipe `unit`", "CC-BY-4.0", "Track 0 by Artist 0",
                   "PeftModel.from_pretrained", "tunekit generate run=", "train_loss", "## Use restrictions"]:
        assert needle in card, needle
    assert (lora_run / "attribution.csv").is_file()
    import yaml

    assert (lora_run / "adapter" / "README.md").read_text() == card  # not peft's blank template
    meta = yaml.safe_load(card.split("---\n")[1])
    assert (meta["license"], meta["library_name"]) == ("cc-by-4.0", "peft")
    assert meta["base_model"] == "facebook/musicgen-small"
    assert {"tunekit", "musicgen", "text-to-audio", "lora"} <= set(meta["tags"])


def test_adapter_loads_with_peft_onto_the_stock_model(lora_run):
    from peft import PeftModel
    from transformers import MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    base_path = resolve("facebook/musicgen-small", tiny=True)
    base = MusicgenForConditionalGeneration.from_pretrained(base_path)
    ref = MusicgenForConditionalGeneration.from_pretrained(base_path)
    model = PeftModel.from_pretrained(base, str(lora_run / "adapter"))
    saved = load_file(str(lora_run / "adapter" / "adapter_model.safetensors"))
    final = ckpt.load_tensors(lora_run / "checkpoints" / "step-0000030")
    assert saved.keys() == final.keys() and len(saved) > 0
    for k in saved:
        torch.testing.assert_close(saved[k], final[k], rtol=0, atol=0)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved)
    assert any(n.startswith("base_model.model.decoder.lm_heads") for n in loaded)  # the `all` preset
    assert not any("text_encoder" in n or "audio_encoder" in n for n in loaded)
    ids = torch.full((4, 5), 7)
    enc = torch.randn(1, 3, ref.config.text_encoder.hidden_size)
    with torch.no_grad():
        a = model(encoder_outputs=(enc,), decoder_input_ids=ids).logits
        b = ref(encoder_outputs=(enc,), decoder_input_ids=ids).logits
    assert (a - b).abs().max() > 1e-3  # the adapter is active and trained


def test_rerunning_a_finished_run_is_a_no_op_and_changed_settings_are_refused(lora_run, two_windows):
    before = (lora_run / "metrics.jsonl").read_text()
    common = ("trainer.max_steps=30", "trainer.lr=5e-3", "method.targets=all", "trainer.cond_dropout=0",
              "model.dropout=0", "method.dropout=0", "trainer.eval_every=15", "trainer.save_every=10",
              "eval.n_prompts=1", "eval.seconds=0.5")
    assert run_train(train_cfg(two_windows, lora_run, *common)) == 0
    assert (lora_run / "metrics.jsonl").read_text() == before
    with pytest.raises(ConfigError, match="trainer.batch_size") as err:
        run_train(train_cfg(two_windows, lora_run, *common, "trainer.batch_size=1"))
    assert err.value.key == "out"
    with pytest.raises(ConfigError, match="choose a new out="):
        run_train(train_cfg(two_windows, lora_run, *common, "resume=false"))


def test_accumulation_is_equivalent_to_the_large_batch(data, tmp_path, monkeypatch):
    """4 x 1, 2 x 2 and 1 x 4 see the same windows per step and must take the same steps: the same step-1
    gradient up to float32 rounding, then AdamW runs that stay together (`assert_same_steps`)."""
    runs = {}
    for bs, ga in [(4, 1), (2, 2), (1, 4)]:
        out, grads = tmp_path / f"b{bs}x{ga}", tmp_path / f"b{bs}x{ga}-grads"
        with monkeypatch.context() as mp:
            capture_first_step_gradients(grads, 0, mp.setattr)
            assert run_train(train_cfg(
                data, out, f"trainer.batch_size={bs}", f"trainer.grad_accum={ga}", "trainer.max_steps=3",
                "model.dropout=0", "method.dropout=0", "trainer.cond_dropout=0.3", "trainer.lr=1e-3",
                "data.crop_seconds=1.5",
            )) == 0
        runs[bs, ga] = (out, grads)
    for bs, ga in [(2, 2), (1, 4)]:
        assert_same_steps(*runs[4, 1], *runs[bs, ga], what=f"batch {bs} x accumulation {ga}")


def test_nan_steps_are_skipped_counted_and_a_streak_stops_the_run(data, tmp_path, monkeypatch):
    import tunekit.train.musicgen as trainer
    from tunekit.train.guard import TrainingDiverged

    real = trainer.masked_ce_sum
    calls = {"n": 0}

    def flaky(logits, targets, mask):  # steps 2 and 3 produce a NaN loss
        calls["n"] += 1
        out = real(logits, targets, mask)
        return out * float("nan") if calls["n"] in (2, 3) else out

    monkeypatch.setattr(trainer, "masked_ce_sum", flaky)
    out = tmp_path / "flaky"
    assert run_train(train_cfg(data, out, "trainer.max_steps=5")) == 0
    rows = _rows(out)
    assert [r["skipped"] for r in rows] == [False, True, True, False, False]
    assert rows[-1]["skipped_nonfinite"] == 2 and rows[-1]["bad_streak"] == 0
    assert all(np.isfinite(r["grad_norm"]) or r["skipped"] for r in rows)
    state = json.loads((out / "checkpoints" / "step-0000005" / "state.json").read_text())
    assert state["guard"]["skipped_nonfinite"] == 2

    monkeypatch.setattr(trainer, "masked_ce_sum", lambda *a: real(*a) * float("nan"))
    with pytest.raises(TrainingDiverged, match="3 consecutive steps with a non-finite loss") as err:
        run_train(train_cfg(data, tmp_path / "diverged", "trainer.max_steps=10", "trainer.max_bad_steps=3"))
    assert "trainer.lr" in str(err.value)


def test_guard_explains_fp16_overflow_once(capsys):
    from tunekit.train.guard import NanGuard, TrainingDiverged

    guard = NanGuard(max_bad_steps=2, fp16=True)
    assert guard.check(1.0, float("inf"), 1) is False
    assert guard.check(1.0, 2.0, 2) is True
    assert guard.check(1.0, float("inf"), 3) is False
    assert capsys.readouterr().out.count("loss scaler") == 1
    assert guard.state() == {"skipped_nonfinite": 0, "skipped_fp16": 2, "bad_streak": 1}
    with pytest.raises(TrainingDiverged):
        for step in range(4, 20):
            guard.check(float("nan"), float("nan"), step)


def test_full_finetune_saves_a_transformers_model(data, tmp_path):
    from transformers import MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    out = tmp_path / "full"
    assert run_train(train_cfg(data, out, "method=full", "trainer.max_steps=3", "trainer.lr=1e-3")) == 0
    assert not (out / "adapter").exists()
    model = MusicgenForConditionalGeneration.from_pretrained(str(out / "model"))
    base = MusicgenForConditionalGeneration.from_pretrained(resolve("facebook/musicgen-small", tiny=True))
    final = ckpt.load_tensors(out / "checkpoints" / "step-0000003")
    params = dict(model.named_parameters())
    assert final and all(k.startswith(("decoder.", "enc_to_dec_proj.")) for k in final)
    for k, v in final.items():
        torch.testing.assert_close(params[k], v, rtol=0, atol=0)
    base_params = dict(base.named_parameters())
    assert any((params[k] - base_params[k]).abs().max() > 0 for k in final)  # the decoder trained
    for k, p in base_params.items():
        if k.startswith(("text_encoder.", "audio_encoder.")):
            torch.testing.assert_close(params[k], p, rtol=0, atol=0)  # frozen parts are the base's
    assert (out / "model" / "tokenizer_config.json").is_file()  # the processor travels with the model
    card = (out / "README.md").read_text()
    assert "full fine-tune" in card and (out / "model" / "README.md").read_text() == card
    assert "library_name: transformers" in card.split("---\n")[1]
    from tunekit.models.musicgen import load_for_generation

    loaded, _, what = load_for_generation(out, device=torch.device("cpu"))
    assert "full fine-tune" in what
    torch.testing.assert_close(dict(loaded.named_parameters())[next(iter(final))], next(iter(final.values())))


def test_preflight_refuses_impossible_settings_naming_the_key(data, tmp_path):
    from tunekit.errors import ConfigErrors

    with pytest.raises(ConfigErrors) as err:
        train_cfg(data, tmp_path / "x", "trainer.batch_size=0", "trainer.lr=0")
    assert "trainer.batch_size" in str(err.value) and "trainer.lr" in str(err.value)

    with pytest.raises(ConfigErrors, match=r"data\.crop_seconds: 45 s needs 2253 decoder positions"):
        run_train(train_cfg(data, tmp_path / "x", "data.crop_seconds=45"))
    assert not (tmp_path / "x").exists()  # refused before any work

    with pytest.raises(ConfigErrors, match="data.pipeline: this recipe expects data prepared with pipeline=acestep"):
        run_train(train_cfg(data, tmp_path / "x", "data.pipeline=acestep"))

    no_tokens = make_dataset(tmp_path / "raw", with_tokens=False)
    with pytest.raises(ConfigError, match=r"run `tunekit prep`"):
        run_train(train_cfg(no_tokens, tmp_path / "x"))

    no_valid = make_dataset(tmp_path / "novalid", tracks=("train", "train", "test"))
    with pytest.raises(ConfigErrors, match="data.valid_split: no held-out windows"):
        run_train(train_cfg(no_valid, tmp_path / "x", "trainer.eval_every=5"))

    stereo = make_dataset(tmp_path / "stereo", n_streams=8)
    with pytest.raises(ConfigErrors, match="tokens have 8 streams .* mono models need mono tokens"):
        run_train(train_cfg(stereo, tmp_path / "x"))


def test_wandb_logs_offline_without_a_key(data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    out = tmp_path / "wb"
    assert run_train(train_cfg(data, out, "logger=wandb", "trainer.max_steps=2")) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert len(_rows(out)) == 2  # metrics.jsonl is written whatever the logger


def test_data_loader_workers_give_the_same_run(data, tmp_path):
    losses = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        run_train(train_cfg(data, out, f"data.num_workers={workers}", "trainer.max_steps=3", "trainer.grad_accum=2"))
        losses[workers] = [r["loss"] for r in _rows(out)]
    # Workers only read integer tokens and strings; this process then runs the same float code on the same
    # batches with the same thread count, so the losses are bitwise equal on any machine.
    assert losses[2] == losses[0]


def test_gradient_checkpointing_takes_the_same_steps(data, tmp_path, monkeypatch):
    import tunekit.train.musicgen as trainer

    enabled = []
    real = trainer.enable_checkpointing

    def spy(decoder):
        real(decoder)
        enabled.append(all(layer.gradient_checkpointing for layer in decoder.model.decoder.layers))

    monkeypatch.setattr(trainer, "enable_checkpointing", spy)
    runs = {}
    for on in ("false", "true"):
        out, grads = tmp_path / f"gc-{on}", tmp_path / f"gc-{on}-grads"
        with monkeypatch.context() as mp:
            capture_first_step_gradients(grads, 0, mp.setattr)
            run_train(train_cfg(data, out, f"model.gradient_checkpointing={on}", "trainer.max_steps=3",
                                "model.dropout=0", "method.dropout=0", "trainer.lr=1e-3"))
        runs[on] = (out, grads)
    assert enabled == [True]  # on for exactly the second run
    assert_same_steps(*runs["false"], *runs["true"], what="gradient checkpointing")


def test_ema_is_checkpointed_and_exported_and_merge_writes_a_transformers_model(data, tmp_path):
    from peft import PeftModel
    from transformers import MusicgenForConditionalGeneration

    from tunekit.models.registry import resolve

    out = tmp_path / "ema"
    run_train(train_cfg(data, out, "trainer.max_steps=4", "trainer.ema_decay=0.5", "trainer.ema_every=1",
                        "trainer.lr=1e-2", "export.merge=true"))
    last = out / "checkpoints" / "step-0000004"
    ema, live = ckpt.load_tensors(last, "ema"), ckpt.load_tensors(last)
    exported = load_file(str(out / "adapter" / "adapter_model.safetensors"))

    def ema_key(k: str) -> str:  # adapter file name -> trained-module parameter name
        return k.removeprefix("base_model.model.").replace(".weight", ".default.weight")

    assert {ema_key(k) for k in exported} == set(ema)
    for k, v in exported.items():
        torch.testing.assert_close(v, ema[ema_key(k)], rtol=0, atol=0)
    assert any(not torch.equal(exported[k], live[k]) for k in exported)  # EMA differs from the live weights

    base_path = resolve("facebook/musicgen-small", tiny=True)
    merged = MusicgenForConditionalGeneration.from_pretrained(str(out / "merged"))
    expected = PeftModel.from_pretrained(MusicgenForConditionalGeneration.from_pretrained(base_path),
                                         str(out / "adapter")).merge_and_unload()
    got = dict(merged.named_parameters())
    for n, p in expected.named_parameters():
        torch.testing.assert_close(got[n], p, rtol=1e-6, atol=1e-6)


def test_stereo_model_trains_on_interleaved_stereo_tokens(tmp_path):
    import soundfile as sf

    stereo = make_dataset(tmp_path / "stereo", n_streams=8, tracks=("train", "valid"), last_partial=None)
    out = tmp_path / "run"
    assert run_train(train_cfg(stereo, out, "model.name=facebook/musicgen-stereo-small", "trainer.max_steps=2",
                               "trainer.eval_every=2", "eval.n_prompts=1", "eval.seconds=0.3")) == 0
    assert _rows(out)[0]["tokens"] == 8 * 2 * 100  # 8 streams x 2 windows x 2 s at 50 Hz
    info = sf.info(str(out / "samples" / "step-0000002" / "00.wav"))
    assert info.channels == 2 and info.samplerate == 32000


def test_melody_model_trains_on_the_chroma_of_its_windows(tmp_path, monkeypatch):
    """MusicGen-melody: transformers' processor needs torchaudio, so this loads the same classes directly."""
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    import tunekit.data.tokens as tokens_mod
    import tunekit.models.musicgen as loader
    from tunekit.models.registry import resolve

    def load(name, *, tiny=False, cache_dir=None, **_):
        path = resolve(name, tiny=tiny, cache_dir=cache_dir)
        return MusicgenMelodyForConditionalGeneration.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)

    monkeypatch.setattr(loader, "load_musicgen", load)
    seen = []
    real_chroma = tokens_mod.MelodySource.chroma

    def spy(self, row, start, n):
        out = real_chroma(self, row, start, n)
        seen.append(out)
        return out

    monkeypatch.setattr(tokens_mod.MelodySource, "chroma", spy)
    data = make_dataset(tmp_path / "melody", tracks=("train", "valid"))
    out = tmp_path / "run"
    assert run_train(train_cfg(data, out, "model.name=facebook/musicgen-melody", "trainer.max_steps=2",
                               "trainer.eval_every=2", "eval.n_prompts=1", "eval.seconds=0.3")) == 0
    assert len(seen) >= 4 and all(c.shape[1] == 12 and (c.sum(axis=1) == 1).all() for c in seen)
    assert np.isfinite([r["loss"] for r in _rows(out) if "loss" in r]).all()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

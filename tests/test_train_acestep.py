"""ACE-Step 1.5 training on tiny pipelines (CPU): the flow-matching objective, timestep samplers, condition dropout,
length-bucketed batches, the exported LoRA files, kill-and-resume, full fine-tuning and per-variant defaults."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _acestep_fixtures import IDS, acestep_cfg, acestep_process, make_latent_dataset
from _train_fixtures import kill_after_checkpoint
from _numerics import assert_close, norm_ratio, reorder_rtol
from safetensors.torch import load_file

from tunekit.data.latents import EvalLatents, LatentSet, LengthBuckets, TrainLatents, collate_latents
from tunekit.errors import ConfigErrors
from tunekit.train import checkpoint as ckpt
from tunekit.train import flow
from tunekit.train.acestep import AceStep, load_dit, setup, train_acestep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The times of the turbo checkpoints as ACE-Step's trainer lists them (facts §3), to 4 decimals.
TURBO_TIMES = [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3]
# Sums along one tiny DiT forward (patchify conv, per layer: q/k/v, attention, output projection for self- and
# cross-attention, the MLP), for float32 reordering bounds (as in test_acestep_models).
DIT_SUMS = (48, *(64, 64, 140, 64, 64, 64, 140, 64, 64, 128) * 2, 64)


@pytest.fixture(scope="module")
def turbo_data(tmp_path_factory) -> Path:
    return make_latent_dataset(tmp_path_factory.mktemp("turbo"))


@pytest.fixture(scope="module")
def base_data(tmp_path_factory) -> Path:
    return make_latent_dataset(tmp_path_factory.mktemp("base"), variant="base",
                               tracks=("train", "train", "train", "valid"))


def _family(data: Path, dit, kind: str = "turbo", seed: int = 3) -> AceStep:
    """The ACE-Step side of the loop around `dit`, as `setup` builds it, on the CPU."""
    from types import SimpleNamespace

    latents = LatentSet(data)
    return AceStep(dit=dit, peft_model=None, device=torch.device("cpu"), null_condition=latents.null_condition,
                   silence_latent=latents.silence_latent, timesteps=flow.TimestepSampler(kind), trainable_names=[],
                   base=SimpleNamespace(name=IDS["turbo"], tiny=True, cache_dir=None), sampling=None, seed=seed)


def _mixed_batch(windows: TrainLatents, size: int) -> dict:
    """The first aligned micro-batch of `size` samples in which some items are dropped and some are not."""
    for start in range(0, 400 * size, size):
        batch = collate_latents([windows[g] for g in range(start, start + size)])
        if 0 < int(batch["drop"].sum()) < size:
            return batch
    raise AssertionError("no micro-batch mixes dropped and kept conditions")


# --- the objective ---------------------------------------------------------------------------------------------


def test_loss_sum_is_the_flow_matching_objective_computed_by_hand(turbo_data):
    latents = LatentSet(turbo_data)
    dit = load_dit(IDS["turbo"], tiny=True, cache_dir=None).eval()
    family = _family(turbo_data, dit, kind="logit_normal")
    windows = TrainLatents(latents, latents.indices("train"), seed=3, cond_dropout=0.5, batch_size=2)
    batch = _mixed_batch(windows, 2)
    with torch.no_grad():
        got = float(family.loss_sum(dit, batch, train=True))

        # By hand: x_t = t·ε + (1 − t)·x0, r = t, target ε − x0, the dropped item on the broadcast null
        # condition, the text-to-music context cat(silence latent, ones), the squared error summed over all.
        x0, cond = batch["x0"], batch["cond"].clone()
        b, frames, channels = x0.shape
        noise, t = flow.draw_noise_and_times(batch["index"].tolist(), (frames, channels),
                                             flow.TimestepSampler("logit_normal"), seed=3, stream=flow.TRAIN_STREAM)
        for i in np.flatnonzero(batch["drop"].numpy()):
            cond[i] = latents.null_condition[0].expand(cond.shape[1], -1)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * x0
        silence = latents.silence_latent[:, :frames]
        context = torch.cat([silence, torch.ones_like(silence)], dim=-1).expand(b, -1, -1)
        v = dit(hidden_states=x_t, timestep=t, timestep_r=t, encoder_hidden_states=cond, context_latents=context).sample
        expected = float(((v.double() - (noise - x0).double()) ** 2).sum())
    assert family.count(batch) == b * frames * channels
    # Same forward on the same inputs; only the order of the final sum of b·T·C positive terms differs.
    assert_close(got, expected, atol=0, rtol=reorder_rtol(b * frames * channels), what="summed flow-matching loss")
    assert 0.0 < float(t.min()) and float(t.max()) < 1.0


# --- timestep samplers -----------------------------------------------------------------------------------------


def test_turbo_table_is_the_shifted_schedule_and_turbo_draws_only_its_values():
    from diffusers import AceStepPipeline

    table = flow.turbo_table()
    assert_close(table, TURBO_TIMES, atol=5e-5, what="turbo table vs the official trainer's list")
    pipeline = AceStepPipeline._get_timestep_schedule(None, 8, 3.0, device="cpu", dtype=torch.float64)
    assert_close(table, pipeline, atol=4 * np.finfo(np.float64).eps, what="turbo table vs the pipeline's schedule")

    n = 8000
    draws = flow.TimestepSampler("turbo")(n, torch.Generator().manual_seed(0))
    values, counts = np.unique(draws.numpy(), return_counts=True)
    assert set(values.tolist()) == set(table.float().tolist())  # table values only, every one of them
    sigma = math.sqrt(n * (1 / 8) * (7 / 8))
    assert np.all(np.abs(counts - n / 8) <= 5 * sigma), counts  # uniform: each count within 5 binomial sigmas


@pytest.mark.parametrize(("mean", "std"), [(-0.4, 1.0), (0.5, 0.7)])
def test_logit_normal_times_have_the_configured_moments(mean, std):
    n = 20_000
    t = flow.TimestepSampler("logit_normal", mean, std)(n, torch.Generator().manual_seed(1)).double()
    assert float(t.min()) > 0 and float(t.max()) < 1
    z = torch.log(t / (1 - t))
    # float32 t carries ~1e-7 relative error, far below the sampling error of the moments.
    assert abs(float(z.mean()) - mean) <= 5 * std / math.sqrt(n), float(z.mean())
    assert abs(float(z.std()) - std) <= 5 * std / math.sqrt(2 * n), float(z.std())


def test_auto_times_follow_the_variant_and_data_of_another_variant_is_refused(turbo_data, base_data, tmp_path):
    assert flow.resolve_timesteps("auto", "turbo") == "turbo"
    assert flow.resolve_timesteps("auto", "base") == flow.resolve_timesteps("auto", "sft") == "logit_normal"
    assert flow.resolve_timesteps("turbo", "base") == "turbo"
    _, family, _ = setup(acestep_cfg(base_data, tmp_path / "base", variant="base"))
    assert family.timesteps.kind == "logit_normal" and family.timesteps.logit_mean == -0.4
    _, family, _ = setup(acestep_cfg(turbo_data, tmp_path / "turbo"))
    assert family.timesteps.kind == "turbo"
    with pytest.raises(ConfigErrors, match="condition encoder differs") as err:
        setup(acestep_cfg(turbo_data, tmp_path / "mixed", variant="base"))
    assert err.value.problems[0].startswith("data.path:")


# --- condition dropout -----------------------------------------------------------------------------------------


def test_dropout_rate_and_dropped_items_see_exactly_the_null_condition(turbo_data):
    latents = LatentSet(turbo_data)
    rows = latents.indices("train")
    n, p = 4000, 0.15
    windows = TrainLatents(latents, rows, seed=5, cond_dropout=p, batch_size=1)
    drops = sum(windows[g].drop for g in range(n))
    assert abs(drops - n * p) <= 5 * math.sqrt(n * p * (1 - p)), drops

    dit = load_dit(IDS["turbo"], tiny=True, cache_dir=None).eval()
    family = _family(turbo_data, dit)
    seen = []

    def recording(**kwargs):
        seen.append(kwargs["encoder_hidden_states"].clone())
        return dit(**kwargs)

    batch = _mixed_batch(TrainLatents(latents, rows, seed=5, cond_dropout=0.5, batch_size=2), 2)
    with torch.no_grad():
        family.loss_sum(recording, batch, train=True)
        family.loss_sum(recording, batch, train=False)
    null = latents.null_condition.expand_as(batch["cond"])  # what the pipeline feeds the DiT for guidance
    for i, dropped in enumerate(batch["drop"].tolist()):
        assert torch.equal(seen[0][i], null[i] if dropped else batch["cond"][i]), (i, dropped)
    assert torch.equal(seen[1], batch["cond"])  # validation never drops


# --- batches -----------------------------------------------------------------------------------------------------


def test_length_buckets_never_mix_lengths_and_every_window_is_read():
    shapes = [(50, 9)] * 5 + [(25, 9)] * 4 + [(50, 7)]  # the last has no partner: never batched at size 2
    buckets = LengthBuckets(shapes, batch_size=2, seed=4)
    assert buckets.per_epoch == 8 and buckets.unbatchable == 1
    positions = [buckets.position(g) for g in range(10 * buckets.per_epoch)]
    for k in range(0, len(positions), 2):
        assert shapes[positions[k]] == shapes[positions[k + 1]], (k, positions[k : k + 2])
    assert set(positions) == set(range(9))  # over epochs, every batchable window, the leftovers too
    assert LengthBuckets(shapes, 2, 4).position(37) == positions[37]  # a function of seed and position
    assert sorted(LengthBuckets(shapes, 1, 4).plan(0).tolist()) == list(range(10))  # batch 1: a plain shuffle
    from tunekit.data.latents import LatentExample

    two = [LatentExample(np.zeros((4, 2), np.float32), np.zeros((3, 5), np.float32), False, "a", 0),
           LatentExample(np.zeros((5, 2), np.float32), np.zeros((3, 5), np.float32), False, "b", 1)]
    with pytest.raises(ValueError, match="mixes window shapes"):
        collate_latents(two)


def test_loader_batches_hold_one_length_and_a_resumed_stream_reads_the_same(turbo_data):
    from tunekit.data.tokens import StepBatches

    latents = LatentSet(turbo_data)
    rows = latents.indices("train")
    windows = TrainLatents(latents, rows, seed=2, cond_dropout=0.3, batch_size=2)

    def batches(start: int) -> list[dict]:
        sampler = StepBatches(start, 6, micro_batch=2, accum=2)
        return list(torch.utils.data.DataLoader(windows, batch_sampler=sampler, collate_fn=collate_latents))

    full, resumed = batches(0), batches(3)
    assert len(full) == 12 and all(b["x0"].shape[0] == 2 for b in full)  # collate refuses mixed lengths
    for a, b in zip(full[6:], resumed, strict=True):
        assert a["window_ids"] == b["window_ids"]
        assert torch.equal(a["x0"], b["x0"]) and torch.equal(a["drop"], b["drop"])
    first = EvalLatents(latents, latents.indices("valid"), seed=2)
    assert np.array_equal(first[0].x0, EvalLatents(latents, latents.indices("valid"), seed=2)[0].x0)


def test_a_batch_size_no_windows_can_fill_is_refused_naming_the_key(turbo_data, tmp_path):
    with pytest.raises(ConfigErrors) as err:
        train_acestep(acestep_cfg(turbo_data, tmp_path / "run", "trainer.batch_size=4"))
    assert any(p.startswith("trainer.batch_size:") and "never padded" in p for p in err.value.problems)


def test_latents_that_disagree_with_windows_parquet_are_refused_before_training(turbo_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = tmp_path / "broken"
    shutil.copytree(turbo_data, broken)
    rows = pq.read_table(broken / "windows.parquet").to_pylist()
    rows[0]["latent_frames"] += 1  # a train window whose stored latent is one frame shorter than recorded
    pq.write_table(pa.Table.from_pylist(rows), broken / "windows.parquet")
    with pytest.raises(ConfigErrors) as err:
        train_acestep(acestep_cfg(broken, tmp_path / "run"))
    assert err.value.problems == [f"data.path: {broken / rows[0]['latents_file']}: {rows[0]['window_id']}/mean is "
                                  f"(50, 8), windows.parquet and the checkpoint say (51, 8)"]
    assert not (tmp_path / "run" / "checkpoints").exists()
    (broken / rows[0]["latents_file"]).unlink()
    with pytest.raises(ConfigErrors, match="is missing"):
        train_acestep(acestep_cfg(broken, tmp_path / "run"))


# --- runs ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(turbo_data, tmp_path_factory) -> Path:
    """8 LoRA steps on the tiny turbo DiT (attention + MLP), with one evaluation, a sample and checkpoints."""
    out = tmp_path_factory.mktemp("runs") / "lora"
    cfg = acestep_cfg(turbo_data, out, "trainer.max_steps=8", "trainer.lr=5e-3", "trainer.grad_accum=2",
                      "method.targets=attention_ffn", "trainer.eval_every=8", "trainer.save_every=4",
                      "eval.n_prompts=1", "eval.seconds=0.5", "trainer.cond_dropout=0.2", "export.merge=true")
    assert train_acestep(cfg) == 0
    return out


def _dit_inputs(frames: int = 12, tokens: int = 9) -> dict:
    g = torch.Generator().manual_seed(7)
    return {"hidden_states": torch.randn(1, frames, 8, generator=g), "timestep": torch.tensor([0.6]),
            "timestep_r": torch.tensor([0.6]), "encoder_hidden_states": torch.randn(1, tokens, 64, generator=g),
            "context_latents": torch.randn(1, frames, 16, generator=g)}


def _out(dit, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return dit.eval()(**inputs, return_dict=False)[0]


@pytest.mark.integration
def test_lora_run_exports_files_that_reproduce_the_trained_dit(lora_run, tmp_path):
    from omegaconf import OmegaConf
    from peft import set_peft_model_state_dict

    from tunekit.models.acestep import load_acestep, load_lora_alpha_correct
    from tunekit.train.acestep import PRESETS
    from tunekit.train.lora import target_regex
    from tunekit.train.methods import build_method

    cfg = OmegaConf.load(lora_run / "config.yaml")
    inputs = _dit_inputs()
    base = _out(load_dit(IDS["turbo"], tiny=True, cache_dir=None), inputs)
    trained_dit = load_dit(IDS["turbo"], tiny=True, cache_dir=None)
    peft_model = build_method(cfg.method).apply(trained_dit, target_regex=lambda p: target_regex(p, PRESETS),
                                                trained=lambda n: True)
    set_peft_model_state_dict(peft_model, ckpt.load_tensors(ckpt.latest_checkpoint(lora_run)))
    trained = _out(trained_dit, inputs)
    assert norm_ratio(trained, base) > 1e-2, "training moved the DiT too little to test the round trip"
    tolerance = min(1e-5, reorder_rtol(*DIT_SUMS) * float(trained.abs().max()))

    pipe = load_acestep(IDS["turbo"], tiny=True)
    pipe.load_lora_weights(str(lora_run / "adapter"))  # diffusers' own loader, alpha from the file's metadata
    assert_close(_out(pipe.transformer, inputs), trained, atol=tolerance, what="diffusers LoRA vs the trained DiT")

    peft_only = tmp_path / "peft"  # the official trainer's layout, alone
    peft_only.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(lora_run / "adapter" / name, peft_only / name)
    config = json.loads((peft_only / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (8, 16.0)
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}
    keys = load_file(str(peft_only / "adapter_model.safetensors"))
    assert "base_model.model.layers.1.cross_attn.o_proj.lora_B.weight" in keys
    other = load_acestep(IDS["turbo"], tiny=True)
    load_lora_alpha_correct(other, peft_only)
    assert_close(_out(other.transformer, inputs), trained, atol=tolerance, what="PEFT layout vs the trained DiT")
    from diffusers import AceStepTransformer1DModel

    merged = AceStepTransformer1DModel.from_pretrained(lora_run / "merged" / "transformer")
    assert_close(_out(merged, inputs), trained, atol=tolerance, what="merged DiT vs the trained DiT")

    rows = [json.loads(x) for x in (lora_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
    assert all(np.isfinite(r["loss"]) for r in rows if "loss" in r) and any("valid_loss" in r for r in rows)
    import soundfile as sf

    info = sf.info(str(lora_run / "samples" / "step-0000008" / "00.wav"))
    assert (info.samplerate, info.channels, info.frames) == (48_000, 2, 24_000)
    card = (lora_run / "README.md").read_text()
    assert "num_inference_steps=8," in card and "shift=3.0, guidance_scale=1.0" in card  # the turbo defaults
    assert "library_name: diffusers" in card
    assert "base_model_relation: adapter" in (lora_run / "adapter" / "README.md").read_text()


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one process-wide precision: start and leave this test with none set."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.integration
@pytest.mark.usefixtures("fresh_accelerator_state")
def test_base_run_samples_with_guidance_in_bf16_autocast_over_fp32_weights(base_data, tmp_path):
    out = tmp_path / "base"
    cfg = acestep_cfg(base_data, out, "trainer.max_steps=2", "trainer.grad_accum=1", "trainer.precision=bf16",
                      "trainer.eval_every=2", "eval.n_prompts=1", "eval.seconds=0.2", "eval.steps=4",
                      variant="base")
    state, family, _ = setup(cfg)
    assert state.precision == "bf16" and all(p.dtype == torch.float32 for p in state.params)
    assert family.lyrics == ["[verse]\nslow lights over the water\n[chorus]\nhold on"]  # the held-out window's
    assert train_acestep(cfg) == 0  # `setup` alone wrote no checkpoint: the run starts afresh
    prompts = json.loads((out / "samples" / "step-0000002" / "prompts.json").read_text())["prompts"]
    assert prompts == ["calm acoustic guitar melody"]
    assert "guidance_scale=7.0" in (out / "README.md").read_text()


@pytest.mark.integration
def test_sigkill_and_rerun_matches_an_uninterrupted_run(turbo_data, tmp_path):
    overrides = ("trainer.max_steps=10", "trainer.save_every=2", "trainer.keep_last=2", "trainer.lr=1e-3",
                 "trainer.grad_accum=2", "trainer.cond_dropout=0.3")  # LoRA dropout 0.1 stays on
    ref = tmp_path / "uninterrupted"
    assert train_acestep(acestep_cfg(turbo_data, ref, *overrides)) == 0

    run = tmp_path / "killed"
    output = kill_after_checkpoint(acestep_process(turbo_data, run, *overrides), run, 4)
    assert ckpt.latest_checkpoint(run) is not None and not (run / "adapter").exists(), output
    assert train_acestep(acestep_cfg(turbo_data, run, *overrides)) == 0

    # One thread in both processes and states restored byte for byte: the runs repeat each other; the
    # tolerance (a thousandth of one lr-1e-3 step) is slack only, while a state not restored moves far more.
    a = load_file(str(ref / "adapter" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(run / "adapter" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert_close(b[k], a[k], atol=1e-6, what=k)
    rows = [[json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
            for r in (ref, run)]
    assert [r["step"] for r in rows[1]] == list(range(1, 11))
    assert_close([r["loss"] for r in rows[1]], [r["loss"] for r in rows[0]], atol=1e-6, what="losses by step")


@pytest.mark.integration
def test_full_finetune_changes_only_the_dit(turbo_data, tmp_path):
    from diffusers import AceStepTransformer1DModel

    from tunekit.file_digest import folder_digest
    from tunekit.models.registry import resolve

    pipeline_folder = Path(resolve(IDS["turbo"], tiny=True))
    before = folder_digest(pipeline_folder)
    out = tmp_path / "full"
    assert train_acestep(acestep_cfg(turbo_data, out, "method=full", "trainer.max_steps=2", "trainer.lr=1e-3",
                                     "trainer.grad_accum=1")) == 0
    assert sorted(p.name for p in (out / "model").iterdir()) == ["README.md", "transformer"]
    tuned = AceStepTransformer1DModel.from_pretrained(out / "model" / "transformer").state_dict()
    base = load_dit(IDS["turbo"], tiny=True, cache_dir=None).state_dict()
    assert tuned.keys() == base.keys()
    changed = [k for k in base if not torch.equal(tuned[k], base[k])]
    assert len(changed) >= 0.9 * len(base), f"only {len(changed)} of {len(base)} DiT tensors changed"
    saved = ckpt.load_tensors(ckpt.latest_checkpoint(out))
    assert set(saved) == {n for n, _ in load_dit(IDS["turbo"], tiny=True, cache_dir=None).named_parameters()}
    assert folder_digest(pipeline_folder) == before  # VAE, encoders and the base DiT are untouched


# --- configuration -----------------------------------------------------------------------------------------------


def test_model_options_set_each_variants_training_defaults(tmp_path):
    from tunekit.config.compose import load_config
    from tunekit.generate import GenerateConfig
    from tunekit.train.config import TrainConfig

    required = [f"out={tmp_path}/run", f"data.path={tmp_path}"]
    for variant, dropout in (("turbo", 0.0), ("base", 0.15), ("sft", 0.15)):
        cfg = load_config("train", [*required, f"model=acestep-1.5-{variant}"], TrainConfig)
        assert (cfg.model.family, cfg.model.name) == ("acestep", IDS[variant])
        assert cfg.trainer.cond_dropout == dropout and cfg.eval.guidance_scale is None
        assert (cfg.method.r, cfg.method.alpha, cfg.method.targets) == (8, 16.0, "attention")
        assert (cfg.trainer.lr, cfg.trainer.batch_size, cfg.trainer.grad_accum) == (1e-4, 1, 4)
        assert load_config("train", [*required, f"model=acestep-1.5-{variant}", "method=full"],
                           TrainConfig).trainer.lr == 1e-5
        gen = load_config("generate", ["prompt=x", f"model=acestep-1.5-{variant}"], GenerateConfig)
        assert gen.model.name == IDS[variant]
    musicgen = load_config("train", required, TrainConfig)
    assert (musicgen.method.r, musicgen.trainer.cond_dropout, musicgen.eval.guidance_scale) == (16, 0.3, 3.0)
    with pytest.raises(ConfigErrors, match="eval.guidance_scale: MusicGen needs a number"):
        load_config("train", [*required, "eval.guidance_scale=null"], TrainConfig)
    with pytest.raises(ConfigErrors, match="flow.timesteps: must be one of auto, turbo, logit_normal"):
        load_config("train", [*required, "model=acestep-1.5-base", "flow.timesteps=uniform"], TrainConfig)

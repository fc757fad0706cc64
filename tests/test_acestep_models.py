"""ACE-Step 1.5 model library: tiny pipelines of the real classes, variant detection, conditioning equal to the
pipeline's own inference path, VAE latents, sampling, and LoRA files loaded at the strength they were trained at."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _numerics import assert_close, norm_ratio, reorder_rtol

from tunekit.errors import ConfigError
from tunekit.models import acestep, registry, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDS = {
    "turbo": "ACE-Step/acestep-v15-xl-turbo-diffusers",
    "base": "ACE-Step/acestep-v15-xl-base-diffusers",
    "sft": "ACE-Step/acestep-v15-sft",
}
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
# Sums along the tiny DiT's forward (patchify conv, then per layer: q/k/v projections, attention over the tokens,
# output projection, the same for cross-attention, the MLP), for float32 reordering bounds.
DIT_SUMS = (48, *(64, 64, 140, 64, 64, 64, 140, 64, 64, 128) * 2, 64)
# The conditioning chain: Qwen3 (2 layers of width 32, MLP 64), the text projector, the lyric and timbre
# encoders (2 layers of width 64, MLP 128, attention over up to 750 tokens).
CONDITION_SUMS = (*(32, 32, 140, 32, 64) * 2, 32, *(64, 64, 750, 64, 128) * 4)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """One tunekit cache for this module (TUNEKIT_CACHE), so each tiny pipeline builds once."""
    folder = tmp_path_factory.mktemp("tunekit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEKIT_CACHE", str(folder))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield folder


@pytest.fixture(scope="module")
def pipes(cache: Path) -> dict:
    """The three tiny pipelines, loaded through `load_acestep` with tiny=True."""
    return {variant: acestep.load_acestep(real_id, tiny=True) for variant, real_id in IDS.items()}


def fresh(variant: str = "turbo"):
    return acestep.load_acestep(IDS[variant], tiny=True)


def dit_inputs(pipe, frames: int = 12, tokens: int = 9) -> dict:
    """Fixed random inputs for one DiT forward."""
    g = torch.Generator().manual_seed(7)
    channels = pipe.transformer.config.audio_acoustic_hidden_dim
    hidden = pipe.transformer.config.hidden_size
    return {
        "hidden_states": torch.randn(1, frames, channels, generator=g),
        "timestep": torch.tensor([0.6]),
        "timestep_r": torch.tensor([0.6]),
        "encoder_hidden_states": torch.randn(1, tokens, hidden, generator=g),
        "context_latents": torch.randn(1, frames, 2 * channels, generator=g),
    }


def dit_out(pipe, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return pipe.transformer(**inputs, return_dict=False)[0]


def dit_tolerance(reference: torch.Tensor) -> float:
    """The float32 reordering bound of one DiT forward, capped at the 1e-5 a reloaded LoRA must reproduce.

    The worst-case bound (~6e-4 here) is far above what two evaluations of the same weights on one machine differ
    by; the cap keeps the requirement."""
    return min(1e-5, reorder_rtol(*DIT_SUMS) * float(reference.abs().max()))


def add_lora(pipe, r: int, alpha: int, targets: list[str] | None = None) -> None:
    """A peft LoRA on the DiT with non-zero lora_B (init_lora_weights=False), as after training."""
    from peft import LoraConfig

    with torch.random.fork_rng():
        torch.manual_seed(11)
        pipe.transformer.add_adapter(
            LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or ATTENTION, init_lora_weights=False),
            adapter_name="default",
        )


def lora_count(pipe) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for m in pipe.transformer.modules())


def write_official_adapter(pipe, folder: Path, r: int, alpha: int, extra: dict | None = None) -> None:
    """The LoRA of `pipe`'s DiT in the official ACE-Step trainer's layout: a peft adapter over the original
    module names (q_proj, k_proj, v_proj, o_proj) with the base model's prefix."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    original = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}
    state = {}
    for key, value in get_peft_model_state_dict(pipe.transformer, adapter_name="default").items():
        for new, old in original.items():
            key = key.replace(f".{new}.lora_", f".{old}.lora_")
        state[f"base_model.model.{key}"] = value.contiguous()
    state.update(extra or {})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]).save_pretrained(folder)


# --- registry, tiny pipelines, loading, variants -------------------------------------------------------------


def test_importing_the_acestep_modules_loads_no_heavy_library() -> None:
    import subprocess
    import sys

    code = ("import sys, tunekit.models.acestep, tunekit.models.acestep_tiny; "
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft') if m in sys.modules]; "
            "sys.exit(f'imported {heavy}' if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_registry_lists_the_three_variants_with_tiny_stand_ins() -> None:
    for variant, real_id in IDS.items():
        spec = registry.find_spec(real_id)
        assert spec is not None and spec.loader == "acestep" and spec.role == "generator", real_id
        assert spec.license == "MIT" and spec.tiny_name == f"acestep-{variant}" in tiny.TINY_NAMES
    assert registry.DEFAULTS["acestep"] == IDS["turbo"]


@pytest.mark.parametrize("variant", list(IDS))
def test_tiny_pipeline_has_the_real_layout_and_variant_marker(variant: str, pipes: dict, cache: Path) -> None:
    folder = cache / "tiny" / f"acestep-{variant}"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "AceStepPipeline"
    for part in ("transformer", "condition_encoder", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), part
    dit_config = json.loads((folder / "transformer" / "config.json").read_text())
    # The real checkpoints' converter copies both fields from the original config.
    assert dit_config["is_turbo"] is (variant == "turbo") and dit_config["model_version"] == variant

    pipe = pipes[variant]
    assert type(pipe).__name__ == "AceStepPipeline" and pipe.is_turbo is (variant == "turbo")
    assert acestep.variant_of(pipe) == variant
    assert pipe.sample_rate == 48_000 and pipe.latents_per_second == 25.0  # hop 1920, as the real VAE
    assert pipe.vae.use_tiling
    silence = pipe.condition_encoder.silence_latent
    channels = pipe.transformer.config.audio_acoustic_hidden_dim
    assert tuple(silence.shape) == (1, 15_000, channels) and float(silence.abs().max()) > 0
    assert pipe.transformer.config.in_channels == 3 * channels


def test_variant_detection_follows_the_checkpoint_config(pipes: dict, cache: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    def copy_with(name: str, **fields) -> str:
        folder = tmp_path / name
        shutil.copytree(cache / "tiny" / "acestep-base", folder)
        config_file = folder / "transformer" / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **fields}))
        return str(folder)

    # diffusers treats model_version "turbo" as turbo even without is_turbo; so does variant_of.
    assert acestep.variant_of(acestep.load_acestep(copy_with("v-turbo", is_turbo=False, model_version="turbo"))) \
        == "turbo"
    with caplog.at_level(logging.WARNING, logger="tunekit.models.acestep"):
        assert acestep.variant_of(acestep.load_acestep(copy_with("unnamed", model_version=None))) == "base"
    assert "names no variant" in caplog.text


def test_load_acestep_rejects_folders_that_are_not_acestep(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as err:
        acestep.load_acestep(str(tmp_path / "missing"))
    assert err.value.key == "model.name"
    with pytest.raises(ConfigError, match="no model_index.json") as err:
        acestep.load_acestep(str(tmp_path), key="model")
    assert err.value.key == "model"
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableAudioPipeline"}))
    with pytest.raises(ConfigError, match="StableAudioPipeline checkpoint, not ACE-Step"):
        acestep.load_acestep(str(other))


def test_a_real_id_offline_says_how_to_get_the_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    from tunekit.models.hub import WeightsNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))
    with pytest.raises(WeightsNotFoundError, match=f"hf download {IDS['sft']}.*models=tiny"):
        acestep.load_acestep(IDS["sft"])


# --- conditioning equals the pipeline's inference path -----------------------------------------------------------


def captured_dit_calls(pipe, **call) -> list[dict]:
    """Run the pipeline and return the keyword arguments of every DiT forward it makes."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: v.detach().clone() if torch.is_tensor(v) else v for k, v in kwargs.items()})

    handle = pipe.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        pipe(output_type="latent", generator=torch.Generator().manual_seed(0), **call)
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("variant", ["turbo", "base"])
def test_encode_conditions_equals_what_the_pipeline_feeds_the_dit(variant: str, pipes: dict) -> None:
    pipe = pipes[variant]
    captions = ["lofi hip hop with warm piano", "dark ambient"]
    lyrics = ["[verse]\nsoft rain on the window\n[chorus]\nstay", "[Instrumental]"]
    metas = {"bpm": [92, 140], "keyscale": ["A minor", None], "timesignature": ["4", None], "language": ["en", "ja"]}
    seconds = [2.0, 1.4]
    ours = acestep.encode_conditions(pipe, captions, lyrics, seconds=seconds, **metas)
    assert ours[0].states.shape[0] != ours[1].states.shape[0]  # per item, unpadded
    for i, (caption, lyric, duration) in enumerate(zip(captions, lyrics, seconds, strict=True)):
        calls = captured_dit_calls(
            pipe, prompt=[caption], lyrics=[lyric], audio_duration=duration, num_inference_steps=2,
            bpm=metas["bpm"][i], keyscale=metas["keyscale"][i], timesignature=metas["timesignature"][i],
            vocal_language=metas["language"][i], guidance_scale=7.0,
        )
        fed = calls[0]["encoder_hidden_states"]
        conditional = fed[:1]
        mine = ours[i]
        assert mine.mask.all() and mine.mask.shape == mine.states.shape[:1]
        tol = reorder_rtol(*CONDITION_SUMS) * float(conditional.abs().max())
        assert_close(mine.states, conditional[0], atol=tol, what=f"{variant} item {i} encoder states")
        frames = math.ceil(duration * 25)
        assert_close(acestep.silence_context(pipe, frames), calls[0]["context_latents"][:1], atol=0.0,
                     what="context latents")
        if variant == "turbo":
            assert fed.shape[0] == 1  # guidance is forced off for turbo
        else:  # the null half of the guidance batch is the learned null condition broadcast to the same length
            null = acestep.null_condition(pipe)
            assert tuple(null.shape) == (1, 1, pipe.transformer.config.hidden_size)
            assert_close(null.expand_as(conditional)[0], fed[1], atol=0.0, what="null condition")

    # The same text with a zero timbre reference (what the official trainer stores) is a different condition:
    # the comparison above can tell them apart.
    text, text_mask, lyric_states, lyric_mask = pipe.encode_prompt(
        [captions[0]], [lyrics[0]], torch.device("cpu"), audio_duration=seconds[0], bpm=92, keyscale="A minor",
        timesignature="4")
    with torch.no_grad():
        zero_timbre, _ = pipe.condition_encoder(text, text_mask, lyric_states, lyric_mask,
                                                torch.zeros(1, 750, pipe.transformer.config.audio_acoustic_hidden_dim),
                                                torch.zeros(1, dtype=torch.long))
    assert norm_ratio(zero_timbre[0], ours[0].states) > 1e-3


def test_silence_context_repeats_past_the_silence_latent_as_the_pipeline_does(pipes: dict) -> None:
    pipe = pipes["base"]
    frames = 15_010
    source, _ = pipe.prepare_src_latents(torch.device("cpu"), torch.float32, batch_size=1, latent_length=frames)
    expected = torch.cat([source, torch.ones_like(source)], dim=-1)
    assert_close(acestep.silence_context(pipe, frames), expected, atol=0.0, what="context latents")
    with pytest.raises(ValueError, match="3 values for 2 captions"):
        acestep.encode_conditions(pipe, ["a", "b"], ["x", "y", "z"], seconds=1.0)


# --- VAE latents --------------------------------------------------------------------------------------------------


def test_encode_and_decode_latents_shapes_rate_and_layout(pipes: dict) -> None:
    pipe = pipes["turbo"]
    g = torch.Generator().manual_seed(3)
    audio = 0.1 * torch.randn(2, 2 * 48_000 + 100, generator=g)
    mean, std = acestep.encode_latents(pipe, audio.numpy())
    channels = pipe.vae.config.decoder_input_channels
    assert mean.shape == std.shape == (50, channels) and mean.dtype == torch.float32  # 25 latents per second
    assert float(std.min()) > 0
    with torch.no_grad():
        dist = pipe.vae.encode(audio[None]).latent_dist
    assert_close(mean, dist.mean[0].T, atol=0.0, what="mean is [T, C] of the VAE's distribution")
    assert_close(std, dist.std[0].T, atol=0.0, what="std")
    decoded = acestep.decode_latents(pipe, mean)
    assert decoded.shape == (1, 2, 50 * 1920) and decoded.dtype == torch.float32
    mono, _ = acestep.encode_latents(pipe.vae, audio[:1])
    both, _ = acestep.encode_latents(pipe, audio[:1].repeat(2, 1))
    assert torch.equal(mono, both)
    with pytest.raises(ValueError, match="channels, samples"):
        acestep.encode_latents(pipe, audio[None])

    # The reconstruction floor: 44.1 kHz mono in, 48 kHz stereo out of the input's length, equal to decoding the
    # mean of the resampled audio.
    from tunekit.audio.resample import resample

    mono = audio[0, :44_100].numpy()
    rebuilt, rate = acestep.reconstruct_with_vae(pipe.vae, mono, 44_100)
    assert rate == 48_000 and rebuilt.shape == (2, 48_000) and rebuilt.dtype == np.float32
    at_48k = resample(mono[None], 44_100, 48_000)
    direct = acestep.decode_latents(pipe, acestep.encode_latents(pipe, at_48k)[0])[0].numpy()
    assert_close(rebuilt, direct, atol=0.0, what="reconstruction")


# --- sampling -----------------------------------------------------------------------------------------------------


def test_sampler_generate_shape_dtype_and_seeding(cache: Path) -> None:
    sampler = acestep.AceStepSampler.load(model=IDS["turbo"], tiny=True)
    assert sampler.variant == "turbo" and not sampler.takes_melody and sampler.codec is sampler.pipe.vae
    assert acestep.AceStepSampler.codec_layout(str(cache / "tiny" / "acestep-turbo")) == (True, 0)
    audio, rate = sampler.generate(["lofi piano", "dark ambient pads with reverb"], 1.3, seed=3)
    assert rate == 48_000 and audio.shape == (2, 2, round(1.3 * 48_000)) and audio.dtype == np.float32
    # The pipeline peak-normalises each clip to -1 dBFS.
    assert np.allclose(np.abs(audio).max(axis=(1, 2)), 10 ** (-1 / 20), rtol=1e-5)
    again, _ = sampler.generate(["lofi piano", "dark ambient pads with reverb"], 1.3, seed=3)
    assert np.array_equal(audio, again)
    other, _ = sampler.generate(["lofi piano"], 1.3, seed=4)
    assert not np.allclose(other[0], audio[0])
    # Each prompt is sampled alone: a clip does not depend on the other prompts of the batch.
    alone, _ = sampler.generate(["dark ambient pads with reverb"], 1.3, seed=3)
    assert np.array_equal(alone[0], audio[1])


@pytest.mark.parametrize(("variant", "steps", "batch"), [("turbo", 8, 1), ("base", 50, 2), ("sft", 50, 2)])
def test_sampler_uses_the_variant_inference_defaults(variant: str, steps: int, batch: int, pipes: dict) -> None:
    sampler = acestep.AceStepSampler(pipes[variant], variant)
    defaults = acestep.INFERENCE_DEFAULTS[variant]
    assert defaults.steps == steps
    calls: list[dict] = []
    handle = sampler.pipe.transformer.register_forward_pre_hook(
        lambda m, a, kw: calls.append({"t": float(kw["timestep"][0]), "batch": kw["hidden_states"].shape[0]}),
        with_kwargs=True)
    try:
        sampler.generate(["lofi piano"], 0.5, seed=0)
    finally:
        handle.remove()
    assert len(calls) == steps and {c["batch"] for c in calls} == {batch}  # batch 2 = guidance with the null
    t = np.linspace(1, 0, steps + 1)[:-1]
    s = defaults.shift
    expected = s * t / (1 + (s - 1) * t)
    assert np.allclose([c["t"] for c in calls], expected, atol=1e-6)
    if variant == "turbo":  # the turbo table
        assert np.allclose(expected, [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3], atol=5e-5)


# --- LoRA files ---------------------------------------------------------------------------------------------------


def test_diffusers_lora_round_trip_reproduces_the_trained_output(tmp_path: Path) -> None:
    from diffusers import AceStepPipeline
    from peft.utils import get_peft_model_state_dict

    trained = fresh()
    inputs = dit_inputs(trained)
    base_out = dit_out(trained, inputs)
    add_lora(trained, r=4, alpha=8)
    expected = dit_out(trained, inputs)
    assert norm_ratio(expected, base_out) > 1e-2  # the LoRA changes the output
    AceStepPipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=get_peft_model_state_dict(trained.transformer),
        transformer_lora_adapter_metadata=trained.transformer.peft_config["default"].to_dict(),
    )
    loaded = fresh()
    name = acestep.load_lora_alpha_correct(loaded, tmp_path)
    assert name in loaded.transformer.peft_config
    assert lora_count(loaded) == len(ATTENTION) * 2 * trained.transformer.config.num_hidden_layers  # self + cross
    got = dit_out(loaded, inputs)
    assert_close(got, expected, atol=dit_tolerance(expected), what="DiT output after the LoRA round trip")
    loaded.unload_lora_weights()
    assert_close(dit_out(loaded, inputs), base_out, atol=dit_tolerance(base_out), what="base after unload")


def test_official_adapter_with_alpha_above_rank_loads_at_full_strength(tmp_path: Path) -> None:
    trained = fresh()
    inputs = dit_inputs(trained)
    base_out = dit_out(trained, inputs)
    add_lora(trained, r=4, alpha=16)
    expected = dit_out(trained, inputs)
    write_official_adapter(trained, tmp_path, r=4, alpha=16)

    ours = fresh()
    acestep.load_lora_alpha_correct(ours, tmp_path)
    assert_close(dit_out(ours, inputs), expected, atol=dit_tolerance(expected), what="official adapter, alpha 16")

    # diffusers' own loader converts the names but resets alpha to the rank: the LoRA plays at r/alpha = 1/4.
    plain = fresh()
    plain.load_lora_weights(str(tmp_path), weight_name="adapter_model.safetensors")
    assert lora_count(plain) == lora_count(ours) > 0
    off = norm_ratio(dit_out(plain, inputs), expected, scale=expected - base_out)
    assert off > 0.5, f"plain load_lora_weights is off by only {off:.3f} of the LoRA's effect"


def test_official_adapter_without_qk_loads_and_foreign_entries_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = fresh()
    inputs = dit_inputs(trained)
    add_lora(trained, r=2, alpha=4, targets=["to_v", "to_out.0"])
    expected = dit_out(trained, inputs)
    foreign = {"base_model.model.lyric_encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64),
               "base_model.model.lyric_encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)}
    vo_only = tmp_path / "vo"
    write_official_adapter(trained, vo_only, r=2, alpha=4)
    with_foreign = tmp_path / "foreign"
    write_official_adapter(trained, with_foreign, r=2, alpha=4, extra=foreign)

    plain = fresh()  # no q/k keys: diffusers does not convert the names and loads nothing
    plain.load_lora_weights(str(vo_only), weight_name="adapter_model.safetensors")
    assert lora_count(plain) == 0

    ours = fresh()
    acestep.load_lora_alpha_correct(ours, vo_only)
    assert lora_count(ours) == 2 * 2 * trained.transformer.config.num_hidden_layers
    assert_close(dit_out(ours, inputs), expected, atol=dit_tolerance(expected), what="v/o-only adapter")

    with caplog.at_level(logging.WARNING, logger="tunekit.models.acestep"):
        acestep.load_lora_alpha_correct(fresh(), with_foreign)
    assert "lyric_encoder.layers.0.self_attn.q_proj" in caplog.text and "not loaded" in caplog.text

    only_foreign = tmp_path / "only-foreign"
    only_foreign.mkdir()
    from peft import LoraConfig
    from safetensors.torch import save_file

    save_file(foreign, only_foreign / "adapter_model.safetensors")
    LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]).save_pretrained(only_foreign)
    with pytest.raises(ConfigError, match="nothing in the adapter matches") as err:
        acestep.load_lora_alpha_correct(fresh(), only_foreign)
    assert err.value.key == "adapter"
    with pytest.raises(ConfigError, match="holds no LoRA"):
        acestep.load_lora_alpha_correct(fresh(), tmp_path / "empty")
    # A diffusers file for another component: diffusers only warns and loads nothing; here it is an error.
    other_component = tmp_path / "text-encoder-lora"
    other_component.mkdir()
    save_file({"text_encoder.layers.0.q.lora_A.weight": torch.zeros(2, 32),
               "text_encoder.layers.0.q.lora_B.weight": torch.zeros(32, 2)},
              other_component / acestep.DIFFUSERS_LORA_FILE)
    with pytest.raises(ConfigError, match="nothing was loaded"):
        acestep.load_lora_alpha_correct(fresh(), other_component)


def test_sampler_loads_a_run_folders_lora_or_full_transformer(tmp_path: Path, cache: Path) -> None:
    from diffusers import AceStepPipeline
    from omegaconf import OmegaConf
    from peft.utils import get_peft_model_state_dict

    def run_folder(name: str) -> Path:
        run = tmp_path / name
        run.mkdir()
        OmegaConf.save({"model": {"name": IDS["base"]}, "models": {"tiny": True, "cache_dir": str(cache)}},
                       run / "config.yaml")
        return run

    trained = fresh("base")
    inputs = dit_inputs(trained)
    add_lora(trained, r=4, alpha=8)
    expected = dit_out(trained, inputs)
    lora_run = run_folder("lora")
    AceStepPipeline.save_lora_weights(
        lora_run / "adapter", transformer_lora_layers=get_peft_model_state_dict(trained.transformer),
        transformer_lora_adapter_metadata=trained.transformer.peft_config["default"].to_dict(),
    )
    sampler = acestep.AceStepSampler.load(lora_run)
    assert sampler.variant == "base" and "LoRA adapter" in sampler.description
    assert_close(dit_out(sampler.pipe, inputs), expected, atol=dit_tolerance(expected), what="run LoRA")
    on_turbo = acestep.AceStepSampler.load(lora_run, model=IDS["turbo"])  # the same LoRA on another variant
    assert on_turbo.variant == "turbo" and lora_count(on_turbo.pipe) == lora_count(sampler.pipe)

    full = fresh("base")
    base_out = dit_out(full, inputs)
    with torch.no_grad():
        for p in full.transformer.parameters():
            p.mul_(1.01)
    full_expected = dit_out(full, inputs)
    assert norm_ratio(full_expected, base_out) > 1e-3
    full_run = run_folder("full")
    full.transformer.save_pretrained(full_run / "model" / "transformer")
    sampler = acestep.AceStepSampler.load(full_run)
    assert "full fine-tune" in sampler.description
    assert_close(dit_out(sampler.pipe, inputs), full_expected, atol=dit_tolerance(full_expected), what="full")

    with pytest.raises(ConfigError, match="has no adapter/ or model/") as err:
        acestep.AceStepSampler.load(run_folder("unfinished"))
    assert err.value.key == "run"

"""Fine-tune ACE-Step 1.5's DiT (diffusers) by flow matching on latents prepared by `tunekit prep pipeline=acestep`:
LoRA or full, one CPU, one GPU, or many GPUs via `accelerate launch`.

    tunekit train recipe=lofi-acestep data.path=out/lofi-acestep out=runs/lofi-acestep
    accelerate launch -m tunekit train recipe=lofi-acestep data.path=out/lofi-acestep out=runs/lofi-acestep  # DDP

Read top to bottom: `setup` loads the DiT alone (the VAE, text and condition encoders ran at prep time: the stored
conditions, null condition and silence latent are all training needs), checks the data against it, makes the
trained weights trainable, prints the plan and resumes if a checkpoint exists; `train_acestep` loops (step, log,
evaluate, checkpoint) and exports. What is ACE-Step's own is here: the `AceStep` family (the DiT call inside the
flow-matching loss, which weights a checkpoint keeps, samples through the pipeline), its LoRA target presets and
its export formats. The flow-matching math is in tunekit.train.flow, the loop's shared parts in
tunekit.train.engine.
"""

from __future__ import annotations

import functools
import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from tunekit.data.latents import EvalLatents, LatentSet, TrainLatents, collate_latents
from tunekit.data.tokens import StepBatches
from tunekit.errors import ConfigError, ConfigErrors
from tunekit.loggers import build_logger
from tunekit.train import checkpoint as ckpt
from tunekit.train.engine import TrainState, in_batches, load_trained_weights, run_steps, run_summary, start
from tunekit.train.export import atomic_dir, copy_attribution, data_card, write_model_card
from tunekit.train.flow import (
    TRAIN_STREAM, VALID_STREAM, TimestepSampler, draw_noise_and_times, drop_conditions, flow_loss_sum,
    resolve_timesteps,
)
from tunekit.train.lora import count_parameters, enable_checkpointing, param_groups, target_regex
from tunekit.train.methods import build_method
from tunekit.train.optim import build_optimizer, warmup_steps
from tunekit.train.preflight import (
    check_fits, dit_memory, human, memory_row, select_latent_rows, show_plan, warn_if_over,
)
from tunekit.train.runtime import make_accelerator, prepare_run_dir, seed_everything

# LoRA targets, by the DiT's module names (diffusers' AceStepTransformer1DModel).
_ATTENTION = r"layers\.\d+\.(?:self_attn|cross_attn)\.(?:to_q|to_k|to_v|to_out\.0)"
_MLP = r"layers\.\d+\.mlp\.(?:gate_proj|up_proj|down_proj)"
_INPUTS = r"condition_embedder|time_embed(?:_r)?\.(?:linear_1|linear_2|time_proj)"  # condition and time inputs
PRESETS: dict[str, list[str]] = {
    "attention": [_ATTENTION],
    "attention_ffn": [_ATTENTION, _MLP],
    "all": [_ATTENTION, _MLP, _INPUTS],
}
# The official ACE-Step trainer's names of the attention projections (its PEFT adapters use them).
OFFICIAL_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}
EXPORT_FOLDERS = {"adapter": "diffusers", "model": "diffusers", "merged": "diffusers"}  # folder -> library


def load_dit(name: str, *, tiny: bool, cache_dir: str | None) -> Any:
    """The DiT (`transformer/`) of an ACE-Step pipeline (hub id or folder) in float32, nothing else of it."""
    from diffusers import AceStepTransformer1DModel

    from tunekit.models.hub import is_local_path, loading
    from tunekit.models.registry import resolve

    path = resolve(name, tiny=tiny, cache_dir=cache_dir)
    if is_local_path(path) and not (Path(path).expanduser() / "transformer" / "config.json").is_file():
        raise ConfigError(f"model.name={name} is not an ACE-Step pipeline folder (no transformer/config.json); use "
                          "an ACE-Step id or a folder written by AceStepPipeline.save_pretrained", key="model.name")
    with loading(name):
        return AceStepTransformer1DModel.from_pretrained(path, subfolder="transformer", torch_dtype=torch.float32)


def dit_variant(dit: Any) -> str:
    """turbo | base | sft, decided from the DiT's config as `variant_of` decides it for a whole pipeline."""
    from tunekit.models.acestep import variant_of

    c = dit.config
    turbo = bool(getattr(c, "is_turbo", False) or getattr(c, "model_version", None) == "turbo")
    return variant_of(SimpleNamespace(is_turbo=turbo, transformer=dit))


@dataclass
class AceStep:
    """ACE-Step's side of the loop (an engine.Trainable): the summed flow-matching loss of a batch of latents,
    the tensors a checkpoint keeps, and audio for the evaluation prompts."""

    dit: Any  # the DiT (LoRA layers injected in place)
    peft_model: Any | None  # the peft model around it for LoRA, None for a full fine-tune
    device: torch.device
    null_condition: torch.Tensor  # [1, 1, H] the checkpoint's learned empty condition
    silence_latent: torch.Tensor  # [1, S, C] what text-to-music conditions the DiT's context on
    timesteps: TimestepSampler
    trainable_names: list[str]  # the parameters a full fine-tune checkpoints
    base: SimpleNamespace  # what loads the rest of the pipeline for samples: name, tiny, cache_dir
    sampling: Any  # the `eval` config group
    seed: int
    lyrics: list[str] = field(default_factory=list)  # per evaluation prompt
    _contexts: dict[int, torch.Tensor] = field(default_factory=dict)

    def context(self, frames: int) -> torch.Tensor:
        """[1, T, 2C] text-to-music context latents on the device (cached per length)."""
        from tunekit.models.acestep import text2music_context

        if frames not in self._contexts:
            self._contexts[frames] = text2music_context(self.silence_latent, frames).to(self.device)
        return self._contexts[frames]

    def loss_sum(self, dit: torch.nn.Module, batch: dict[str, Any], train: bool) -> torch.Tensor:
        """Summed squared velocity error of one micro-batch; `train` drops conditions as the batch says."""
        dev = self.device
        x0, cond = batch["x0"].to(dev), batch["cond"].to(dev)
        if train:
            cond = drop_conditions(cond, batch["drop"], self.null_condition)
        noise, t = draw_noise_and_times(batch["index"].tolist(), x0.shape[1:], self.timesteps, seed=self.seed,
                                        stream=TRAIN_STREAM if train else VALID_STREAM)
        context = self.context(x0.shape[1]).expand(len(x0), -1, -1)

        def predict(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return dit(hidden_states=x_t, timestep=tt, timestep_r=tt, encoder_hidden_states=cond,
                       context_latents=context, return_dict=False)[0]

        return flow_loss_sum(predict, x0, noise.to(dev), t.to(dev))

    def count(self, batch: dict[str, Any]) -> int:
        """Latent elements predicted: B x T x C."""
        return int(batch["x0"].numel())

    def trained_weights(self, full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The LoRA adapter in peft's names, or the trained parameters of a full fine-tune."""
        if self.peft_model is None:
            return {n: full_state[n] for n in self.trainable_names}
        from peft import get_peft_model_state_dict

        named = {f"base_model.model.{n}": v for n, v in full_state.items()}
        return get_peft_model_state_dict(self.peft_model, state_dict=named)

    def generate(self, prompts: list[str]) -> tuple[Any, int]:
        """Audio of `eval.seconds` per prompt through `AceStepSampler`, the trained DiT in the pipeline the base
        checkpoint's VAE and encoders complete; they are loaded for this and released after."""
        from tunekit.models.acestep import AceStepSampler, load_acestep

        b, e = self.base, self.sampling
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            pipe = load_acestep(b.name, tiny=b.tiny, cache_dir=b.cache_dir, device=self.device, transformer=self.dit)
            try:
                sampler = AceStepSampler(pipe, f"{b.name} being fine-tuned")
                return sampler.generate(prompts, e.seconds, seed=self.seed, lyrics=self.lyrics[: len(prompts)],
                                        steps=e.steps, shift=e.shift, guidance_scale=e.guidance_scale)
            finally:
                del pipe
                gc.collect()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()


@dataclass
class Data:
    """The windows a run trains and validates on."""

    latents: LatentSet
    train_rows: np.ndarray
    valid_rows: np.ndarray


def setup(cfg: Any) -> tuple[TrainState, AceStep, Data]:
    """Everything before the first step: load and check the data and the DiT (refusing before any work what
    cannot run), make the trained weights trainable, print the plan, build the optimiser and resume the newest
    checkpoint of `out=` if there is one."""
    t, m, run_dir = cfg.trainer, cfg.model, Path(cfg.out).expanduser()
    unused = [k for k in ("attn_implementation", "dropout") if m[k] is not None]
    if unused:
        raise ConfigError(f"model.{unused[0]} applies to MusicGen only; leave it null for ACE-Step",
                          key=f"model.{unused[0]}")
    acc, precision = make_accelerator(t)
    main, dev = acc.is_main_process, acc.device
    if acc.distributed_type.name == "FSDP" and t.ema_decay > 0:
        raise ConfigError("trainer.ema_decay: EMA is not available under FSDP (the weights are sharded); set it to 0",
                          key="trainer.ema_decay")

    # ---- data and model, checked before any work ----
    latents = LatentSet(cfg.data.path)
    dit = load_dit(m.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    c, variant = dit.config, dit_variant(dit)
    train_rows, valid_rows, problems = select_latent_rows(
        latents, cfg, channels=c.audio_acoustic_hidden_dim, hidden=c.encoder_hidden_size or c.hidden_size,
        variant=variant)
    if problems:
        raise ConfigErrors(problems)
    kind = resolve_timesteps(cfg.flow.timesteps, variant)

    # ---- what trains ----
    seed_everything(t.seed)
    presets = functools.partial(target_regex, presets=PRESETS)
    peft_model = build_method(cfg.method).apply(dit, target_regex=presets, trained=lambda name: True)  # full: all
    if m.gradient_checkpointing:
        enable_checkpointing(dit)

    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    prepare_run_dir(cfg, latest is not None, write=main)  # every rank checks, so every rank stops on a problem
    print_plan(cfg, dit=dit, variant=variant, kind=kind, latents=latents, train_rows=train_rows,
               valid_rows=valid_rows, precision=precision, device=dev, world=acc.num_processes,
               resuming=latest.name if latest else None, show=main)
    if main:
        ckpt.remove_partial(run_dir)
    acc.wait_for_everyone()

    # ---- optimiser, resume ----
    if latest is not None:
        load_trained_weights(latest, dit, peft_model)
    optimizer, scheduler = build_optimizer(param_groups(dit, t.weight_decay), t, dev.type)
    family = AceStep(
        dit=dit, peft_model=peft_model, device=dev, null_condition=latents.null_condition.to(dev),
        silence_latent=latents.silence_latent,
        trainable_names=[n for n, p in dit.named_parameters() if p.requires_grad],
        timesteps=TimestepSampler(kind, cfg.flow.logit_mean, cfg.flow.logit_std),
        base=SimpleNamespace(name=m.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir),
        sampling=cfg.eval, seed=t.seed,
    )
    state = start(acc, dit, optimizer, scheduler, family, t, precision, run_dir, latest)
    state.logger = build_logger(cfg.logger, run_dir, _plain(cfg)) if main else None
    state.prompts, family.lyrics = _eval_prompts(cfg, latents, valid_rows)
    return state, family, Data(latents, train_rows, valid_rows)


def print_plan(cfg: Any, *, dit: Any, variant: str, kind: str, latents: LatentSet, train_rows: np.ndarray,
               valid_rows: np.ndarray, precision: str, device: Any, world: int, resuming: str | None,
               show: bool) -> None:
    """Print (if `show`) what will run and its memory estimate; refuse when weights + optimiser cannot fit."""
    t, c = cfg.trainer, dit.config
    trainable, total = count_parameters(dit)
    frames, conds = int(latents.frames[train_rows].max()), int(latents.cond_length[train_rows].max())
    mem = dit_memory(cfg, hidden=c.hidden_size, layers=c.num_hidden_layers, ffn=c.intermediate_size,
                     tokens=math.ceil(frames / c.patch_size), cond_tokens=conds, trainable=trainable,
                     on_device=total, precision=precision, device=device)
    have = check_fits(cfg, mem, device)
    rate, batch = latents.info.frame_rate, t.batch_size * t.grad_accum * world
    windows = TrainLatents(latents, train_rows, t.seed, t.cond_dropout, t.batch_size).buckets
    show_plan([
        ("model", f"{cfg.model.name}{' (tiny)' if cfg.models.tiny else ''}: ACE-Step 1.5 {variant} DiT, "
                  f"{c.num_hidden_layers} layers x {c.hidden_size}"),
        ("method", build_method(cfg.method).plan()),
        ("trainable", f"{human(trainable)} of {human(total)} parameters ({100 * trainable / total:.2f}%)"),
        ("data", f"{len(train_rows)} train windows ({latents.frames[train_rows].sum() / rate / 3600:.2f} h), "
                 f"{len(valid_rows)} valid windows; {latents.info.codec}"
                 + (f"; {windows.unbatchable} in no batch of {t.batch_size} (no other window of their length)"
                    if windows.unbatchable else "")),
        ("batch", f"{t.batch_size} x {t.grad_accum} accum x {world} devices = {batch} windows of <= "
                  f"{frames / rate:g} s, one length per micro-batch (never padded)"),
        ("flow", f"times {kind}" + (f" (N({cfg.flow.logit_mean:g}, {cfg.flow.logit_std:g}))"
                                    if kind == "logit_normal" else "") + f", condition dropout {t.cond_dropout:g}"),
        ("steps", f"{t.max_steps} (~{t.max_steps * batch / windows.per_epoch:.1f} epochs), lr {t.lr:g} "
                  f"{t.schedule}, warmup {warmup_steps(t.warmup, t.max_steps)}"),
        ("device", f"{device} x {world}, precision {precision}"
                   + (", gradient checkpointing" if cfg.model.gradient_checkpointing else "")),
        memory_row(mem, have),
        ("run", f"{cfg.out}" + (f" (resuming from {resuming})" if resuming else "")),
    ], show=show)
    if show:
        warn_if_over(mem, have)
        if latents.info.model != cfg.model.name:
            print(f"note: the data was prepared with {latents.info.model}, the run trains {cfg.model.name} (both "
                  f"{variant})")


def train_loader(cfg: Any, data: Data, state: TrainState) -> torch.utils.data.DataLoader:
    """This rank's micro-batches from the step after `state.step` on: the sample stream is a function of the
    seed and the position only, so a resumed run reads what the uninterrupted one would have read."""
    t = cfg.trainer
    windows = TrainLatents(data.latents, data.train_rows, t.seed, t.cond_dropout, t.batch_size)
    return torch.utils.data.DataLoader(
        windows, batch_sampler=StepBatches(state.step, t.max_steps, t.batch_size, t.grad_accum, state.world,
                                           state.rank, start_sample=state.data_position),
        collate_fn=collate_latents, num_workers=cfg.data.num_workers, pin_memory=state.device.type == "cuda",
        generator=torch.Generator().manual_seed(t.seed),  # its base seed is drawn from this, not the global RNG
    )


def train_acestep(cfg: Any) -> int:
    """Run (or resume) the training described by a validated TrainConfig; returns 0 when done."""
    t = cfg.trainer
    state, family, data = setup(cfg)
    loader = train_loader(cfg, data, state)
    valid = EvalLatents(data.latents, data.valid_rows[: t.eval_windows], t.seed)
    # validation: one window per batch, never padded
    run_steps(state, iter(loader), lambda: in_batches(valid, 1, collate_latents),
              epoch_windows=loader.dataset.buckets.per_epoch)
    if state.main:
        _export(cfg, state, family, data)
        state.logger.finish()
    state.acc.wait_for_everyone()
    return 0


def write_lora(folder: Path, peft_model: Any, base: str) -> None:
    """The LoRA in the two layouts other tools load, side by side in `folder`: diffusers'
    `pytorch_lora_weights.safetensors` with the adapter config in its metadata (so `load_lora_weights` keeps
    alpha), and the official trainer's PEFT layout (`adapter_config.json` + `adapter_model.safetensors`, keys
    `base_model.model.layers.N.{self,cross}_attn.{q,k,v,o}_proj…`)."""
    from diffusers import AceStepPipeline
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    config = peft_model.peft_config["default"]
    state = {k.removeprefix("base_model.model."): v.detach().cpu().contiguous()
             for k, v in get_peft_model_state_dict(peft_model).items()}
    AceStepPipeline.save_lora_weights(folder, transformer_lora_layers=state,
                                      transformer_lora_adapter_metadata=config.to_dict())
    official, modules = {}, set()
    for key, value in state.items():
        module, _, part = key.partition(".lora_")
        for ours, theirs in OFFICIAL_NAMES.items():
            if module.endswith(f".{ours}"):
                module = module.removesuffix(ours) + theirs
                break
        modules.add(module.rpartition(".")[2])
        official[f"base_model.model.{module}.lora_{part}"] = value
    save_file(official, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, bias="none",
               target_modules=sorted(modules), base_model_name_or_path=base).save_pretrained(str(folder))


def _export(cfg: Any, state: TrainState, family: AceStep, data: Data) -> None:
    """LoRA (diffusers + PEFT layouts, + merged DiT) or the full DiT, attribution and model card."""
    from tunekit.models.acestep import INFERENCE_DEFAULTS
    from tunekit.models.registry import resolve

    run_dir, peft_model, dit = state.run_dir, family.peft_model, family.dit
    if state.fsdp:  # this rank holds a shard only: the trained DiT again, from the final checkpoint's full weights
        dit = load_dit(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
        peft_model = build_method(cfg.method).apply(dit, target_regex=functools.partial(target_regex, presets=PRESETS),
                                                    trained=lambda name: True)
        load_trained_weights(ckpt.latest_checkpoint(run_dir), dit, peft_model)
    trainable, total = count_parameters(dit)  # before a merge takes the adapters out
    if state.ema is not None and cfg.export.use_ema:
        state.ema.swap()
    base = resolve(cfg.model.name, tiny=cfg.models.tiny, cache_dir=cfg.models.cache_dir)
    if peft_model is not None:
        with atomic_dir(run_dir / "adapter") as tmp:
            write_lora(tmp, peft_model, cfg.model.name)
        if cfg.export.merge:
            with atomic_dir(run_dir / "merged") as tmp:
                peft_model.merge_and_unload().save_pretrained(str(tmp / "transformer"))
    else:
        with atomic_dir(run_dir / "model") as tmp:
            dit.save_pretrained(str(tmp / "transformer"))
    variant = dit_variant(dit)
    rate = data.latents.info.frame_rate
    longest = float(data.latents.frames[data.train_rows].max()) / rate
    write_model_card(
        run_dir, folders=EXPORT_FOLDERS, cfg=cfg, base=cfg.model.name, base_path=base, trainable=trainable,
        total=total, data=data_card(data.latents, data.train_rows, data.valid_rows), metrics=run_summary(state),
        attribution=copy_attribution(data.latents.root, run_dir), library="diffusers",
        relation="finetune" if peft_model is None else "adapter",
        inputs=f"{data.latents.info.codec}, whole windows of up to {longest:g} s; flow matching with "
               f"{resolve_timesteps(cfg.flow.timesteps, variant)} times",
        usage=usage_snippet(run_dir, base, peft_model is None, bool(cfg.models.tiny), INFERENCE_DEFAULTS[variant]),
    )
    what = "adapter/" if peft_model is not None else "model/"
    print(f"done: {run_dir}/{what} (+ README.md model card); try it with: tunekit generate run={run_dir} "
          f"prompt='…'{' models=tiny' if cfg.models.tiny else ''}", flush=True)


def usage_snippet(run_dir: Path, base: str, full: bool, tiny: bool, defaults: Any) -> str:
    """The model card's 'Use' section: the CLI, and diffusers with the variant's steps, shift and guidance."""
    cli = f'tunekit generate run={run_dir} prompt="your prompt" duration=30 out=out.wav{" models=tiny" if tiny else ""}'
    if full:
        load = (f'transformer = AceStepTransformer1DModel.from_pretrained("{run_dir}/model/transformer")\n'
                f'pipe = AceStepPipeline.from_pretrained("{base}", transformer=transformer)')
    else:
        load = (f'pipe = AceStepPipeline.from_pretrained("{base}")\n'
                f'pipe.load_lora_weights("{run_dir}/adapter")  # the diffusers file keeps the trained alpha')
    py = f"""from diffusers import AceStepPipeline, AceStepTransformer1DModel

{load}
audio = pipe(prompt="your prompt", lyrics="[Instrumental]", audio_duration=30.0, num_inference_steps={defaults.steps},
             shift={defaults.shift!r}, guidance_scale={defaults.guidance_scale!r}).audios
# audio[0] is (2, samples) at pipe.sample_rate (48 kHz); the PEFT files in adapter/ load in the official tools"""
    return f"```bash\n{cli}\n```\n\n```python\n{py}\n```"


def _eval_prompts(cfg: Any, latents: LatentSet, valid_rows: Any) -> tuple[list[str], list[str]]:
    """(prompts, lyrics): the configured prompts (instrumental), else the caption and lyrics of the first window
    of each of the first n_prompts held-out tracks."""
    if cfg.eval.prompts:
        return [str(p) for p in cfg.eval.prompts], ["[Instrumental]"] * len(cfg.eval.prompts)
    prompts, lyrics, seen = [], [], set()
    for r in valid_rows:
        if latents.track_id[r] not in seen and latents.captions[r]:
            seen.add(latents.track_id[r])
            prompts.append(latents.captions[r])
            lyrics.append(latents.lyrics[r] or "[Instrumental]")
        if len(prompts) >= cfg.eval.n_prompts:
            break
    return prompts, lyrics


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]

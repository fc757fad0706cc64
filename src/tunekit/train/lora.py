"""Which weights train: LoRA adapters injected with peft (target presets) or the whole decoder.

Presets name modules of transformers' MusicGen by their full path, so the text encoder (T5: q/k/v/o,
wi/wo) and EnCodec are never matched and the saved adapter loads onto the stock model unchanged. Another
family passes its own presets to `target_regex` (ACE-Step's are in tunekit.train.acestep).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

_LAYERS = r"decoder\.model\.decoder\.layers\.\d+\."
_ATTENTION = _LAYERS + r"(?:self_attn|encoder_attn)\.(?:q_proj|k_proj|v_proj|out_proj)"
_FFN = _LAYERS + r"(?:fc1|fc2)"
_EXTRA = r"decoder\.lm_heads\.\d+|decoder\.model\.decoder\.embed_tokens\.\d+|enc_to_dec_proj|audio_enc_to_dec_proj"

PRESETS: dict[str, list[str]] = {
    "attention": [_ATTENTION],
    "attention_ffn": [_ATTENTION, _FFN],
    "all": [_ATTENTION, _FFN, _EXTRA],  # musicgen-dreamboothing's list
}


def target_regex(preset: str, presets: dict[str, list[str]] = PRESETS) -> str:
    """peft `target_modules` pattern (matched with re.fullmatch against module names) for a preset of
    `presets` (a family's presets; MusicGen's by default)."""
    if preset not in presets:
        from tunekit.errors import ConfigError

        raise ConfigError(
            f"unknown LoRA target preset {preset!r}; use one of {', '.join(presets)}", key="method.targets"
        )
    return "(?:" + "|".join(presets[preset]) + ")"


def inject_lora(model: Any, r: int, alpha: float, dropout: float, pattern: str) -> Any:
    """Freeze `model` and inject LoRA adapters on the modules whose full name matches `pattern`; returns the
    peft model (the base model is modified in place)."""
    from peft import LoraConfig, get_peft_model

    model.requires_grad_(False)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    with warnings.catch_warnings():  # peft asks transformers about checkpointing through a deprecated name
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def apply_lora(model: Any, r: int, alpha: float, dropout: float, targets: str) -> Any:
    """MusicGen: `inject_lora` on a target preset (attention | attention_ffn | all)."""
    return inject_lora(model, r, alpha, dropout, target_regex(targets))


def enable_checkpointing(module: Any) -> None:
    """Recompute activations in the backward pass (non-reentrant, so frozen inputs and LoRA both work)."""
    if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.2x
        module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(module, "gradient_checkpointing_enable"):  # older transformers
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:  # diffusers models, whose checkpointing is non-reentrant already
        module.enable_gradient_checkpointing()


def unfreeze(model: Any, trained: Callable[[str], bool]) -> None:
    """Full fine-tune: freeze `model`, then train the parameters whose names `trained` selects."""
    model.requires_grad_(False)
    for name, p in model.named_parameters():
        if trained(name):
            p.requires_grad_(True)


def decoder_trained(name: str) -> bool:
    """MusicGen's full fine-tune trains the decoder and the projections into it; T5 and EnCodec stay frozen,
    and the sinusoidal position table is fixed by design."""
    return name.startswith(("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj.")) and "embed_positions" not in name


def unfreeze_decoder(model: Any) -> None:
    """MusicGen: `unfreeze` the decoder and its input projections."""
    unfreeze(model, decoder_trained)


def count_parameters(module: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total


def param_groups(module: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices, none on biases, norms and embedding tables."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "norm" in name or ("embed_tokens" in name and "lora_" not in name)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def set_decoder_dropout(model: Any, p: float) -> None:
    """Set every dropout rate of the decoder (hidden, attention, activation) to `p`, in modules and config."""
    import torch

    for m in model.decoder.modules():
        for attr in ("dropout", "activation_dropout", "attention_dropout"):
            if isinstance(getattr(m, attr, None), (int, float)) and not isinstance(getattr(m, attr), bool):
                setattr(m, attr, p)
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for attr in ("dropout", "activation_dropout", "attention_dropout"):
        if hasattr(model.decoder.config, attr):
            setattr(model.decoder.config, attr, p)

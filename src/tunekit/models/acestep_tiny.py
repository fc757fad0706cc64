"""Tiny random ACE-Step 1.5 pipelines (turbo, base, sft) for `models=tiny`: the real diffusers classes, tiny sizes.

`build_tiny_acestep(out, variant=…)` writes what `AceStepPipeline.save_pretrained` writes for the real
checkpoints (model_index.json, transformer/, condition_encoder/, vae/, text_encoder/, tokenizer/, scheduler/),
so `tunekit.models.acestep.load_acestep` loads it with `AceStepPipeline.from_pretrained` like a Hub id.

What matches the real model: every class, the 48 kHz stereo VAE with hop 1920 (25 latents per second), the
DiT's patch size, RoPE and sliding/full attention pattern, the scheduler, the variant marker in the DiT config
(`is_turbo`, `model_version`), and a non-zero `silence_latent` of 15000 frames (the VAE's encoding of silence).
What is tiny: widths and depths, and the latent has 8 channels instead of 64 (so the DiT's `in_channels` is 24).
The three variants share the VAE, text encoder and tokenizer (as the real ones do) and differ in their DiT and
condition encoder. The tokenizer is a byte-level BPE trained here, so nothing is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tunekit.models.tiny import MUSIC_WORDS, seeded

TINY_TEXT_ENCODER_SEED = 1101
TINY_VAE_SEED = 1102
TINY_DIT_SEED = 1110  # + the variant's index
TINY_CONDITION_SEED = 1120  # + the variant's index
LATENT_CHANNELS = 8  # the real VAE's latent has 64
SILENCE_FRAMES = 15_000  # frames of the real checkpoints' silence_latent (10 minutes at 25 per second)

# The variant marker as the real checkpoints' transformer/config.json carries it (the converter copies both).
_VARIANT_CONFIG: dict[str, dict[str, Any]] = {
    "turbo": {"is_turbo": True, "model_version": "turbo"},
    "base": {"is_turbo": False, "model_version": "base"},
    "sft": {"is_turbo": False, "model_version": "sft"},
}

# Words of the pipeline's prompt templates, so the tiny tokenizer keeps them whole.
_TEMPLATE_WORDS = (
    "# Instruction Caption Metas Languages Lyric Fill audio semantic mask based on given conditions: "
    "- bpm: timesignature: keyscale: duration: seconds N/A en [verse] [chorus] [Instrumental]"
)


def tiny_qwen3_tokenizer() -> Any:
    """A byte-level BPE tokenizer (Qwen's kind) of 400 tokens with `<|endoftext|>` as eos and pad.

    Any text encodes (bytes are the fallback); the pipeline's templates end with the literal
    `<|endoftext|>`, which is one special token here as in Qwen3's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(MUSIC_WORDS), _TEMPLATE_WORDS], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=32768
    )


def tiny_vae() -> Any:
    """The tiny AutoencoderOobleck: stereo 48 kHz, hop 2·4·4·6·10 = 1920 like the real one, 8 latent channels."""
    from diffusers import AutoencoderOobleck

    with seeded(TINY_VAE_SEED), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        return AutoencoderOobleck(
            encoder_hidden_size=2 * LATENT_CHANNELS,  # the encoder outputs mean and scale
            downsampling_ratios=[2, 4, 4, 6, 10],
            channel_multiples=[1, 2, 2, 2, 2],
            decoder_channels=8,
            decoder_input_channels=LATENT_CHANNELS,
            audio_channels=2,
            sampling_rate=48_000,
        ).eval()


def tiny_silence_latent(vae: Any) -> Any:
    """[1, 15000, C]: the VAE's encoding (mean) of digital silence, as the real `silence_latent` is.

    Two seconds are encoded and their middle frame is repeated: away from the edges the encoding of silence is
    one constant frame, and encoding ten minutes would take minutes on a CPU.
    """
    import torch

    with torch.no_grad():
        mean = vae.encode(torch.zeros(1, 2, 2 * 48_000)).latent_dist.mean  # [1, C, 50]
    frame = mean[:, :, mean.shape[-1] // 2]  # [1, C]
    return frame[:, None, :].expand(1, SILENCE_FRAMES, frame.shape[-1]).contiguous()


def build_tiny_acestep(out: Path, *, variant: str) -> None:
    """Write a tiny ACE-Step 1.5 pipeline of `variant` (turbo, base or sft) into `out` with `save_pretrained`."""
    from diffusers import (
        AceStepConditionEncoder,
        AceStepPipeline,
        AceStepTransformer1DModel,
        FlowMatchEulerDiscreteScheduler,
    )
    from transformers import Qwen3Config, Qwen3Model

    index = list(_VARIANT_CONFIG).index(variant)
    tokenizer = tiny_qwen3_tokenizer()
    with seeded(TINY_TEXT_ENCODER_SEED):
        text_encoder = Qwen3Model(
            Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=4096,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        ).eval()
    vae = tiny_vae()
    shared = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 16}
    with seeded(TINY_DIT_SEED + index):
        transformer = AceStepTransformer1DModel(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            in_channels=3 * LATENT_CHANNELS,  # x_t, source latents, chunk mask
            audio_acoustic_hidden_dim=LATENT_CHANNELS,
            patch_size=2,
            rope_theta=1_000_000.0,
            **shared,
            **_VARIANT_CONFIG[variant],
        )
    with seeded(TINY_CONDITION_SEED + index):
        condition_encoder = AceStepConditionEncoder(
            hidden_size=64,
            intermediate_size=128,
            text_hidden_dim=32,
            timbre_hidden_dim=LATENT_CHANNELS,
            num_lyric_encoder_hidden_layers=2,
            num_timbre_encoder_hidden_layers=2,
            **shared,
        )
    condition_encoder.silence_latent.copy_(tiny_silence_latent(vae))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    pipe = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
    )
    pipe.save_pretrained(out)

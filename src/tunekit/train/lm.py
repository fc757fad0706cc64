"""The trained part of MusicGen, separated from its frozen encoders, and how its conditions are built.

`MusicgenLM` holds the decoder and the projection(s) into it; it is what DDP/FSDP wrap and what the
optimiser sees. The T5 text encoder runs beside it under no_grad (frozen) and EnCodec is not on the
training path at all (tokens were precomputed by prep). Text states are computed on the fly rather
than precomputed: they cost one small encoder pass per step, keep every caption variant available,
and would take ~10x the disk of the tokens themselves if stored per variant.

Condition dropout reproduces transformers' unconditional branch of classifier-free guidance exactly:
`generate` appends zeroed text states with a zeroed attention mask (and, for melody models, the
null chroma whose first pitch class is 1), so a dropped sample gets precisely those inputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunekit.models.musicgen import is_melody


class MusicgenLM(nn.Module):
    """Decoder + text (and chroma) projections of a MusicGen model; forward returns logits (B, K, S, V).

    The submodules are the model's own objects, so LoRA layers injected into the model by peft are
    trained here and saved through the peft model with the original parameter names.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.decoder
        self.melody = is_melody(model)
        self.num_codebooks = model.decoder.config.num_codebooks
        text_hidden = model.config.text_encoder.hidden_size
        needs_proj = text_hidden != model.decoder.config.hidden_size and (
            self.melody or model.decoder.config.cross_attention_hidden_size is None
        )
        self.enc_to_dec_proj = model.enc_to_dec_proj if needs_proj else None
        if self.melody:
            self.chroma_length = int(model.config.chroma_length)
            self.num_chroma = int(model.config.num_chroma)
            self.audio_enc_to_dec_proj = getattr(model, "audio_enc_to_dec_proj", None)

    def condition(self, text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Project T5 states into the decoder and zero padded/dropped positions, as transformers does."""
        if self.enc_to_dec_proj is not None:
            text_states = self.enc_to_dec_proj(text_states)
        return text_states * text_mask[..., None].to(text_states.dtype)

    def melody_prefix(self, chroma: torch.Tensor) -> torch.Tensor:
        """Project (B, frames, 12) chroma and repeat/truncate it to the model's chroma_length."""
        h = self.audio_enc_to_dec_proj(chroma) if self.audio_enc_to_dec_proj is not None else chroma
        if h.shape[1] < self.chroma_length:
            h = h.repeat(1, -(-self.chroma_length // h.shape[1]), 1)
        return h[:, : self.chroma_length]

    def forward(
        self,
        inputs: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        chroma: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, k, s = inputs.shape
        states = self.condition(text_states, text_mask)
        ids = inputs.reshape(b * k, s)
        if self.melody:
            if chroma is None:
                chroma = null_chroma(b, self.num_chroma, states.device, states.dtype)
            states = torch.cat([self.melody_prefix(chroma.to(states.dtype)), states], dim=1)
            out = self.decoder(input_ids=ids, encoder_hidden_states=states, use_cache=False)
        else:
            out = self.decoder(
                input_ids=ids, encoder_hidden_states=states, encoder_attention_mask=text_mask, use_cache=False
            )
        logits = out.logits.reshape(b, k, -1, out.logits.shape[-1])
        return logits[:, :, -s:]  # melody: drop the positions of the prepended conditions


def null_chroma(batch: int, num_chroma: int, device: Any, dtype: Any, frames: int = 1) -> torch.Tensor:
    """The melody models' empty melody condition: first pitch class set, as in transformers' generate."""
    c = torch.zeros((batch, frames, num_chroma), device=device, dtype=dtype)
    c[..., 0] = 1
    return c


@torch.no_grad()
def encode_text(
    text_encoder: Any, tokenizer: Any, captions: list[str], device: Any, max_tokens: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen T5 states (B, L, H) and attention mask (B, L) for `captions`."""
    enc = tokenizer(captions, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    ids = enc["input_ids"].to(device)
    mask = enc["attention_mask"].to(device)
    states = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return states, mask


def drop_conditions(
    states: torch.Tensor,
    mask: torch.Tensor,
    drop: torch.Tensor,
    chroma: torch.Tensor | None = None,
    drop_melody: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Replace the conditions of dropped samples by the unconditional inputs CFG contrasts with.

    Text: states and attention mask zeroed (transformers' null branch). Melody: the null chroma, for
    samples in `drop` (everything dropped) or in `drop_melody` (melody only).
    """
    drop = drop.to(states.device)
    keep = (~drop).to(states.dtype)[:, None, None]
    states = states * keep
    mask = mask * (~drop).to(mask.dtype)[:, None]
    if chroma is not None:
        gone = drop if drop_melody is None else drop | drop_melody.to(drop.device)
        null = null_chroma(chroma.shape[0], chroma.shape[-1], chroma.device, chroma.dtype, chroma.shape[1])
        chroma = torch.where(gone.to(chroma.device)[:, None, None], null, chroma)
    return states, mask, chroma

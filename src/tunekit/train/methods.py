"""Training methods, chosen with `method=lora|full`: each group file names its class as `_target_`.

A method decides which weights train. It knows nothing of a model family's module names: the family's
trainer passes them in (its LoRA target presets and which parameters a full fine-tune trains), so the same
two methods serve every family. `build_method(cfg.method)` instantiates the configured class with the
fields it declares; the model card, the pre-flight plan and the trainer ask the object, never a string.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tunekit.errors import ConfigError


@dataclass
class Lora:
    """LoRA adapters (peft) on the family's target modules; the base stays frozen."""

    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.05
    targets: str = "attention_ffn"
    name: ClassVar[str] = "lora"
    full: ClassVar[bool] = False  # trains every weight of the trained module

    def apply(self, model: Any, *, target_regex: Callable[[str], str], trained: Callable[[str], bool]) -> Any:
        """Freeze `model` and inject adapters on the modules `target_regex(self.targets)` matches; returns the
        peft model (the base is modified in place)."""
        from tunekit.train.lora import inject_lora

        return inject_lora(model, self.r, self.alpha, self.dropout, target_regex(self.targets))

    def plan(self) -> str:
        """The pre-flight line."""
        return f"lora r={self.r} alpha={self.alpha:g} targets={self.targets}"

    def card(self, trainable: int, total: int) -> str:
        """The model card's method line."""
        return (f"LoRA r={self.r}, alpha={self.alpha:g}, dropout={self.dropout:g}, targets `{self.targets}` "
                f"({trainable:,} trainable of {total:,} parameters)")


@dataclass
class FullFineTune:
    """Every weight of the family's trained module (MusicGen: the decoder); the encoders stay frozen."""

    name: ClassVar[str] = "full"
    full: ClassVar[bool] = True

    def apply(self, model: Any, *, target_regex: Callable[[str], str], trained: Callable[[str], bool]) -> None:
        """Freeze `model`, then unfreeze the parameters `trained(name)` selects; there is no peft model."""
        from tunekit.train.lora import unfreeze

        unfreeze(model, trained)

    def plan(self) -> str:
        return "full"

    def card(self, trainable: int, total: int) -> str:
        return f"full fine-tune ({trainable:,} of {total:,} parameters trained; the encoders frozen)"


Method = Lora | FullFineTune
METHODS: dict[str, type] = {c.name: c for c in (Lora, FullFineTune)}


def method_class(target: str) -> type:
    """The class `method._target_` names (a ConfigError naming the key when it cannot be imported)."""
    module, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"method._target_={target} cannot be imported ({exc}); use method=lora or method=full",
                          key="method._target_") from exc
    if not (dataclasses.is_dataclass(cls) and callable(getattr(cls, "apply", None))):
        raise ConfigError(f"method._target_={target} is not a training method (a dataclass with apply())",
                          key="method._target_")
    return cls


def build_method(section: Any) -> Method:
    """The method object of a `method` config section: its `_target_` class with the fields it declares."""
    cls = method_class(section["_target_"])
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: section[k] for k in fields if k in section})

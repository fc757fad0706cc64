"""Guards against bad steps: non-finite losses/gradients are skipped and counted; a streak stops the run."""

from __future__ import annotations

from tunekit.errors import TunekitError


class TrainingDiverged(TunekitError):
    """Too many consecutive non-finite steps: the run cannot recover by skipping."""


class NanGuard:
    """Counts skipped steps. fp16 overflows (the loss scaler's normal back-off) are explained once."""

    FP16_NOTE = (
        "fp16: a step overflowed and was skipped while the loss scaler lowers its scale; this is expected "
        "now and then (counted as skipped_fp16 in the metrics, not reported again). Use trainer.precision=bf16 "
        "on GPUs that support it to avoid it."
    )

    def __init__(self, max_bad_steps: int, fp16: bool = False) -> None:
        self.max_bad_steps = max_bad_steps
        self.fp16 = fp16
        self.skipped_nonfinite = 0
        self.skipped_fp16 = 0
        self.streak = 0
        self._noted = False

    def check(self, loss: float, grad_norm: float, step: int) -> bool:
        """True if the step may be applied. Raises TrainingDiverged after `max_bad_steps` bad steps in a row."""
        import math

        loss_ok = math.isfinite(loss)
        grad_ok = math.isfinite(grad_norm)
        if loss_ok and grad_ok:
            self.streak = 0
            return True
        self.streak += 1
        # fp16 with a finite loss but overflowing gradients: the scaler's job; allow a longer streak since
        # each skip halves the scale.
        overflow = self.fp16 and loss_ok
        if overflow:
            self.skipped_fp16 += 1
            if not self._noted:
                print(f"step {step}: {self.FP16_NOTE}", flush=True)
                self._noted = True
        else:
            self.skipped_nonfinite += 1
        limit = self.max_bad_steps * (4 if overflow else 1)
        if self.streak >= limit:
            what = "loss" if not loss_ok else "gradient norm"
            raise TrainingDiverged(
                f"training stopped at step {step}: {self.streak} consecutive steps with a non-finite {what} "
                f"(skipped so far: {self.skipped_nonfinite} non-finite, {self.skipped_fp16} fp16 overflows). "
                "Lower trainer.lr, keep trainer.grad_clip at 1.0, use trainer.precision=bf16 or fp32, or resume "
                "from an earlier checkpoint; trainer.max_bad_steps sets how many bad steps in a row are tolerated"
            )
        return False

    def state(self) -> dict[str, int]:
        return {
            "skipped_nonfinite": self.skipped_nonfinite, "skipped_fp16": self.skipped_fp16, "bad_streak": self.streak,
        }

    def load(self, state: dict[str, int]) -> None:
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
        self.skipped_fp16 = int(state.get("skipped_fp16", 0))
        self.streak = int(state.get("bad_streak", 0))

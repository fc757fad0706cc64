"""Experiment loggers selected by `logger=` (configs/logger/*.yaml `_target_`): W&B, CSV or none.

Shared by `tunekit train` (`build_logger`) and `tunekit eval` (its `logger` section selects W&B or none).
Every logger gets the same calls; `<run>/metrics.jsonl` is written by the trainer regardless.
W&B is imported only when used, and runs offline when no API key is configured, so nothing fails
on a machine that was never logged in.
"""

from __future__ import annotations

import csv
import netrc
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class LoggerConfig:
    """Where metrics go besides <out>/metrics.jsonl (always written)."""

    _target_: str = "tunekit.loggers.WandbLogger"  # logger class: WandbLogger | CSVLogger | NoLogger
    project: str = "tunekit"  # W&B project
    entity: str | None = None  # W&B entity (team); null: your default
    mode: str = "auto"  # W&B mode: auto (online when logged in, else offline) | online | offline
    log_audio: bool = True  # upload evaluation samples as audio


class NoLogger:
    """Logs nothing beyond metrics.jsonl."""

    def __init__(self, run_dir: str | Path, run_config: dict[str, Any], **_: Any) -> None:
        self.run_dir = Path(run_dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Record scalar metrics at `step`."""

    def log_samples(self, samples: list[tuple[str, Any, int]], step: int) -> None:
        """Record evaluation samples: (prompt, audio (C, N) float32, rate)."""

    def finish(self) -> None:
        """Flush and close."""


class CSVLogger(NoLogger):
    """`<run>/metrics.csv`: one row per logged step; new metric names extend the header.

    Several calls for one step (training metrics, then validation) fill one row. A resumed run replaces the
    rows a killed run wrote from its resume step on.
    """

    def __init__(self, run_dir: str | Path, run_config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(run_dir, run_config, **kwargs)
        self.path = self.run_dir / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        self._logged: set[int] = set()  # steps logged by this process
        if self.path.is_file():
            with open(self.path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row: dict[str, Any] = {"step": step}
        if step in self._logged:
            row.update(next((r for r in self.rows if int(float(r["step"])) == step), {}))
        row.update(metrics)
        self._logged.add(step)
        self.rows = [r for r in self.rows if int(float(r.get("step", -1))) < step] + [row]
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        from tunekit.atomic import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)


def wandb_has_key() -> bool:
    """True when an API key is configured (env var or ~/.netrc), i.e. online logging can work."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        auth = netrc.netrc().authenticators(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1])
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def wandb_mode(mode: str = "auto") -> str:
    """`online`/`offline` as given; `auto`: WANDB_MODE when set, else online with an API key, offline without."""
    if mode in ("online", "offline"):
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_has_key() else "offline")


class WandbLogger(NoLogger):
    """Weights & Biases: config, losses, lr, grad norm, tokens/s, memory, skipped steps and audio samples."""

    def __init__(
        self,
        run_dir: str | Path,
        run_config: dict[str, Any],
        project: str = "tunekit",
        entity: str | None = None,
        mode: str = "auto",
        log_audio: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(run_dir, run_config, **kwargs)
        import wandb

        if mode == "auto":
            mode = wandb_mode(mode)
            if mode == "offline":
                print(f"wandb: no API key found, logging offline into {self.run_dir / 'wandb'} "
                      "(upload later with `wandb sync`)")
        self.log_audio = log_audio
        self._wandb = wandb
        run_id_file = self.run_dir / "wandb_run_id.txt"
        run_id = run_id_file.read_text().strip() if run_id_file.is_file() else secrets.token_hex(4)
        if not run_id_file.is_file():
            from tunekit.atomic import write_text

            write_text(run_id_file, run_id)
        self.run = wandb.init(
            project=project, entity=entity, mode=mode, dir=str(self.run_dir), config=run_config, id=run_id,
            resume="allow", name=self.run_dir.name, settings=wandb.Settings(quiet=True),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_samples(self, samples: list[tuple[str, Any, int]], step: int) -> None:
        if not self.log_audio or not samples:
            return
        audio = [self._wandb.Audio(a.T, sample_rate=rate, caption=prompt) for prompt, a, rate in samples]
        self.run.log({"samples": audio}, step=step)

    def finish(self) -> None:
        self.run.finish()


def build_logger(logger_cfg: Any, run_dir: str | Path, config: dict[str, Any]) -> NoLogger:
    """Instantiate the logger named by `logger._target_` with the run folder and the resolved config."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from tunekit.errors import ConfigError

    fields = OmegaConf.to_container(logger_cfg, resolve=True) if OmegaConf.is_config(logger_cfg) else dict(logger_cfg)
    target = fields.pop("_target_")
    try:
        cls = get_class(target)
    except Exception as exc:  # hydra raises a plain ImportError-like exception with the details
        raise ConfigError(f"logger._target_={target} cannot be imported: {exc}", key="logger._target_") from exc
    return cls(run_dir, config, **fields)

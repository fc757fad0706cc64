"""Schema of `tunekit eval` (configs/eval.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunekit.loggers import LoggerConfig
from tunekit.models.config import ModelsConfig

EMBEDDING_NAMES = ("clap", "encodec", "vggish")


@dataclass
class EvalConfig:
    """Score generated music against reference music: FAD (+ FAD∞) and KAD per embedding and the CLAP score;
    in run mode also fine-tuned − base for each, with a bootstrap interval over the prompts."""

    run: str | None = None  # training run folder: generate with its base and fine-tuned models, score both
    generated: str | None = None  # standalone mode: folder of generated audio to score (with reference=)
    reference: str | None = None  # reference audio: a folder, or a prep output (its held-out windows); run mode: the run's dataset
    out: str | None = None  # output folder; required in standalone mode; run mode: <run>/eval
    prompts: str | None = None  # standalone mode: CSV/JSONL mapping clip id to prompt, for the CLAP score
    reference_splits: list[str] = field(default_factory=lambda: ["test"])  # prep splits used as the held-out reference
    embeddings: list[str] = field(default_factory=lambda: ["clap", "encodec", "vggish"])  # embeddings to compute FAD and KAD with
    clap_model: str = "laion/larger_clap_music"  # CLAP checkpoint for the CLAP score and CLAP FAD
    encodec_model: str = "facebook/encodec_32khz"  # EnCodec for latent FAD (and the standalone reconstruction floor)
    vggish_model: str = "torchvggish"  # VGGish weights: folder, .pth/.safetensors file, Hub repo, or torchvggish
    clap_score: bool = True  # compute the CLAP score wherever prompts or captions exist
    reconstruction_floor: bool = True  # FAD of codec-reconstructed reference vs the reference (the floor a model can reach)
    fad_inf: bool = True  # fit FAD∞ = a in FAD(n) = a + b/n over subsets drawn without replacement
    fad_inf_steps: int = 10  # number of subset sizes in the FAD∞ fit
    fad_inf_min_n: int = 0  # smallest subset in frames; 0: a quarter of the frames; never below 2 × the embedding dimension
    fad_inf_draws: int = 3  # random subsets per size
    kad: bool = True  # Kernel Audio Distance (kadtk's unbiased MMD² × 100, bandwidth from the reference) beside FAD
    kad_max_frames: int = 10000  # frames per side KAD uses; above it every k-th frame of each clip (0: all)
    bootstrap: int = 1000  # run mode: resamples of the prompts for the 95% interval of each fine-tuned − base difference (0: none)
    outliers: int = 5  # most outlier clips listed per embedding (distance > 3 sd above the set's mean; sets of 11+ clips)
    seed: int = 0  # base seed: the batch starting at prompt i samples with seed + i (base and fine-tuned alike); also seeds FAD∞ subsets and the bootstrap
    n_samples: int = 0  # run mode: held-out prompts to generate (0: all)
    duration: float | None = None  # run mode: seconds per prompt; null: the reference windows' median length (longer windows keep their first `duration` s)
    # run mode: classifier-free guidance (same for base and fine-tuned); null: the model's default (MusicGen 3.0;
    # ACE-Step turbo 1.0 = off, base/sft 7.0)
    guidance_scale: float | None = None
    top_k: int = 250  # run mode, MusicGen: top-k sampling
    temperature: float = 1.0  # run mode, MusicGen: sampling temperature
    steps: int | None = None  # run mode, ACE-Step: sampling steps; null: the variant's (turbo 8, base/sft 50)
    shift: float | None = None  # run mode, ACE-Step: timestep shift; null: the variant's (turbo 3.0, base/sft 1.0)
    batch_size: int = 8  # prompts generated / windows embedded per batch
    device: str = "auto"  # cpu, cuda, cuda:N, or auto (cuda when available)
    cache: bool = True  # reuse cached reference statistics (<cache>/eval-stats)
    report_clips: int = 12  # clips shown with players and spectrograms in report.html
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # logger=wandb: a W&B run (run mode: in the training run's project); logger=none: none
    models: ModelsConfig = field(default_factory=ModelsConfig)  # which weights the loaders use (models=tiny: tiny random)

    def uses_wandb(self) -> bool:
        """True when the logger group selects W&B (logger=wandb)."""
        return str(self.logger._target_).endswith("WandbLogger")

    @classmethod
    def problems(cls, cfg: Any) -> list[str]:
        """Every problem with the config at once (empty when it can run)."""
        out: list[str] = []
        run, gen, ref = cfg.run, cfg.generated, cfg.reference
        if run and gen:
            out.append("set either run=<run dir> or generated=<dir> reference=<dir>, not both (keys: run, generated)")
        elif not run and not gen:
            out.append("nothing to evaluate: set run=<run dir>, or generated=<dir> reference=<dir> out=<dir> (keys: run, generated)")
        elif gen and not ref:
            out.append("generated= needs reference=<folder of audio or prep output> (key: reference)")
        elif gen and not cfg.out:
            out.append("standalone mode needs out=<folder> for metrics.json and report.html (key: out)")
        if run and cfg.prompts:
            out.append("prompts= is for standalone mode; run mode uses the run's held-out prompts (key: prompts)")
        bad = [e for e in cfg.embeddings if e not in EMBEDDING_NAMES]
        if bad:
            out.append(f"unknown embeddings {bad}; choose from {list(EMBEDDING_NAMES)} (key: embeddings)")
        if not cfg.embeddings and not cfg.clap_score:
            out.append("nothing to compute: embeddings is empty and clap_score is false (key: embeddings)")
        if getattr(cfg.logger, "mode", "auto") not in ("auto", "online", "offline"):
            out.append("logger.mode must be auto, online or offline (key: logger.mode)")
        if cfg.fad_inf and cfg.fad_inf_steps < 2:
            out.append("fad_inf_steps must be at least 2 for a fit (key: fad_inf_steps)")
        for key in ("fad_inf_draws", "batch_size"):
            if getattr(cfg, key) < 1:
                out.append(f"{key} must be at least 1 (key: {key})")
        for key in ("n_samples", "outliers", "report_clips", "fad_inf_min_n", "kad_max_frames", "bootstrap"):
            if getattr(cfg, key) < 0:
                out.append(f"{key} must not be negative (key: {key})")
        if cfg.duration is not None and cfg.duration <= 0:
            out.append("duration must be positive, in seconds, or null for the reference windows' length (key: duration)")
        if cfg.kad and 0 < cfg.kad_max_frames < 2:
            out.append("kad_max_frames must be at least 2 (or 0 for all frames) (key: kad_max_frames)")
        if not cfg.reference_splits:
            out.append("reference_splits must name at least one prep split, e.g. [test] (key: reference_splits)")
        return out

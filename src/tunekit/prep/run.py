"""`tunekit prep corpus=<dir> out=<dir>`: check the config, run the pipeline, write the dataset.

Everything is checked before any work starts (options, paths, the output folder's manifest), and
all problems are reported at once. A run holds a lock on `out`; re-running the same command
resumes from the stage cache (a killed run loses at most the rows in flight) and rewrites the
same tables; a different corpus or working format in an existing `out` is refused unless
`overwrite=true`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from tunekit.errors import ConfigError, ConfigErrors, RunFailedError
from tunekit.prep.config import PrepConfig, as_prep_config, config_dict

log = logging.getLogger("tunekit.prep")

MANIFEST = "manifest.json"
LOCK = ".lock"
LOG = "prep.log"


def _writable_dir(path: Path, key: str) -> str | None:
    if path.exists() and not path.is_dir():
        return f"{key}={path} is a file; give a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tunekit-write-test-"):
            pass
    except OSError as exc:
        return f"{key}={path} is not writable ({exc.strerror or exc}); choose another folder"
    return None


def path_problems(cfg: PrepConfig) -> list[str]:
    """Problems with corpus, out and cache_dir (missing, not a folder, not writable)."""
    from tunekit.prep.hf_source import is_hub_spec, parse_hub_spec

    out: list[str] = []
    if not cfg.corpus or cfg.corpus == MISSING:
        out.append("missing value for 'corpus' (set it with corpus=<folder of audio files>)")
    elif is_hub_spec(cfg.corpus):
        try:
            parse_hub_spec(cfg.corpus)
        except ConfigError as exc:
            out.append(str(exc))
    else:
        corpus = Path(cfg.corpus).expanduser()
        if not corpus.exists():
            out.append(f"corpus={cfg.corpus} does not exist; give the folder that holds your audio files")
        elif not corpus.is_dir():
            out.append(f"corpus={cfg.corpus} is not a folder; give the folder that holds your audio files")
    if not cfg.out or cfg.out == MISSING:
        out.append("missing value for 'out' (set it with out=<folder for the dataset>)")
    else:
        problem = _writable_dir(Path(cfg.out).expanduser(), "out")
        if problem:
            out.append(problem)
        elif cfg.cache_dir:
            problem = _writable_dir(Path(cfg.cache_dir).expanduser(), "cache_dir")
            if problem:
                out.append(problem)
    return out


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` (released by the OS even if the process is killed)."""
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(  # noqa: B904 - the lock being held is the whole story
                f"another tunekit prep is writing to out={out}; wait for it or use another out", key="out"
            )
        yield
    finally:
        os.close(fd)


def manifest_for(cfg: PrepConfig, corpus: Path) -> dict[str, Any]:
    """What must match for a re-run into the same `out`: corpus, pipeline and working format."""
    from tunekit.prep.cache import params_digest

    ident = {
        "pipeline": cfg.pipeline_name,
        "stages": list(cfg.stages),
        "sample_rate": cfg.decode.sample_rate,
        "channels": cfg.decode.channels,
    }
    return {"kind": "tunekit-prep", "corpus": str(corpus), **ident, "fingerprint": params_digest(ident)[:16]}


def check_manifest(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse an `out` made from another corpus or pipeline/working format (unless overwrite)."""
    path = out / MANIFEST
    if not path.is_file():
        others = [
            p.name for p in out.iterdir() if p.name not in (LOCK,) and not p.name.startswith(".tunekit-write-test-")
        ]
        if others and not overwrite:
            raise ConfigError(
                f"out={out} is not empty and is not a tunekit prep output ({', '.join(sorted(others)[:3])}…); "
                "choose an empty or new folder, or set overwrite=true",
                key="out",
            )
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        old = {}
    if overwrite:
        return
    if old.get("corpus") != manifest["corpus"]:
        raise ConfigError(
            f"out={out} holds a dataset prepared from corpus={old.get('corpus')}, not {manifest['corpus']}; "
            "choose another out or set overwrite=true",
            key="out",
        )
    if old.get("fingerprint") != manifest["fingerprint"]:
        was, now = (
            f"pipeline {m.get('pipeline')} {m.get('stages')} at {m.get('sample_rate')} Hz/{m.get('channels')} ch"
            for m in (old, manifest)
        )
        raise ConfigError(
            f"out={out} was prepared with {was}; this run asks for {now}; choose another out or set overwrite=true",
            key="out",
        )


def _setup_logging(out: Path, quiet: bool) -> list[logging.Handler]:
    handlers: list[logging.Handler] = []
    fh = logging.FileHandler(out / LOG, mode="w", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handlers.append(fh)
    if quiet:
        sh = logging.StreamHandler()
        sh.setFormatter(logging.Formatter("tunekit prep: %(message)s"))
        sh.setLevel(logging.INFO)
        sh.addFilter(lambda record: record.levelno >= logging.WARNING or record.getMessage().startswith("stage "))
        handlers.append(sh)
    # Every tunekit logger's records (the prep stages', and the model library's they call) go to prep.log.
    root = logging.getLogger("tunekit")
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.INFO)
    log.setLevel(logging.INFO)
    root.propagate = False
    return handlers


def run_prep(cfg: Any) -> int:
    """Run `tunekit prep` with a composed config (DictConfig or PrepConfig). Returns the exit code (0).

    Raises ConfigError/ConfigErrors for unusable configs (model-dependent values included), before
    any work starts; RunFailedError after writing the outputs when a stage failed for all its rows or
    for more than `max_failed_fraction` of them, or when no usable window was made.
    """
    _one_math_thread_per_process()  # before anything imports numpy
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import make_executor
    from tunekit.prep.hf_source import open_dataset, resolve_corpus, scan_dataset
    from tunekit.prep.ingest import scan_corpus
    from tunekit.prep.outputs import (
        build_summary,
        remove_stale_audio,
        write_attribution,
        write_summary,
        write_tables,
    )
    from tunekit.prep.progress import LogReporter, RichReporter
    from tunekit.prep.rows import StageContext

    t0 = time.perf_counter()
    pc = as_prep_config(cfg)
    problems = PrepConfig.problems(pc) + path_problems(pc)
    if problems:
        raise ConfigErrors(problems)
    corpus = resolve_corpus(pc.corpus or "")  # hf://org/name: the dataset's snapshot in the Hugging Face cache
    out = Path(pc.out or "").expanduser().resolve()
    cache_dir = Path(pc.cache_dir).expanduser().resolve() if pc.cache_dir else out / ".cache"
    # A dataset's rows are read (and their audio written into the cache) once `out` is locked and claimed.
    dataset = open_dataset(corpus, pc.source, exclude=[out, cache_dir])
    rows, scan = ([], None) if dataset else scan_corpus(corpus, pc.ingest, exclude=[out, cache_dir])
    if not rows and dataset is None:
        exts = ", ".join(pc.ingest.extensions)
        raise ConfigError(f"corpus={corpus} contains no audio files ({exts}); check the folder", key="corpus")
    if dataset is not None and not dataset.rows:
        raise ConfigError(f"corpus={corpus}: the dataset has no rows in {', '.join(dataset.shards)}", key="corpus")
    manifest = manifest_for(pc, corpus)
    with _locked(out):
        check_manifest(out, manifest, pc.overwrite)
        from tunekit.atomic import write_json

        write_json(out / MANIFEST, manifest)
        # Plain progress lines when asked, or when output goes to a file or pipe (CI, `make demo | tee`),
        # where a live display would print every refresh.
        plain = pc.quiet or not sys.stdout.isatty()
        handlers = _setup_logging(out, plain)
        try:
            console = _console()
            reporter = LogReporter() if plain else RichReporter(console)
            if dataset is not None:
                with reporter:
                    rows, scan = scan_dataset(dataset, cache_dir, reporter)
            log.info("tunekit prep: %d audio files in %s -> %s; stages %s", len(rows), corpus, out, list(pc.stages))
            for problem in scan.metadata_problems:
                log.warning("metadata: %s", problem)
            if cache_dir == out / ".cache":  # the output's own cache: the lock makes it ours alone
                from tunekit.prep.cache import StageCache

                swept = StageCache(cache_dir, out).remove_temporaries()
                if swept:
                    log.info("removed %d unfinished cache writes of an interrupted run", swept)
            ctx = StageContext(
                corpus_dir=scan.root or str(corpus),
                out_dir=str(out),
                cache_dir=str(cache_dir),
                work_rate=pc.decode.sample_rate,
                work_channels=pc.decode.channels,
                models=pc.models,
            )
            preload = worker_preload(pc.stages)
            shared = (shared_paths(pc, Path(ctx.corpus_dir), out, cache_dir, rows, corpus if dataset else None)
                      if pc.executor.name == "ray" else [])
            model_groups = model_stages(pc.stages)
            engine = Engine(
                pc, ctx, lambda: make_executor(pc.workers, preload, pc.executor, shared, model_groups), reporter
            )
            try:
                with reporter:
                    rows = engine.run(rows, pc.stages)
            finally:
                engine.close()
            for r in rows:
                if r.status == "rejected":
                    log.info("rejected %s (%s): %s %s", r.source_path, r.failed_stage, r.reason, r.reason_detail or "")
            failures = engine.failures(pc.max_failed_fraction) + no_windows_problems(rows)
            write_tables(rows, out)
            write_attribution(rows, out)
            # A failed run removes nothing: the re-run that resumes it needs the stored audio of failed tracks.
            removed = 0 if failures else remove_stale_audio(rows, out)
            if removed:
                log.info("removed %d stale audio files from %s", removed, out / "audio")
            summary = build_summary(
                rows,
                {name: s.as_dict() for name, s in engine.stats.items()},
                dict(engine.window_rejects),
                config_dict(pc),
                {"other_files": scan.other_files, "metadata_problems": scan.metadata_problems},
                time.perf_counter() - t0,
                failures,
            )
            summary["workers_start_s"] = round(engine.executor_start_s, 3)
            summary["pipeline"] = pc.pipeline_name
            models = stage_models(pc)
            if models:
                summary["models"] = models
            write_summary(summary, out)
            log.info("done: %s", json.dumps(summary["counts"]))
            for failure in failures:
                log.error("prep failed: %s", failure)
            print_summary(summary, console)
        finally:
            for h in handlers:
                logging.getLogger("tunekit").removeHandler(h)
                h.close()
            logging.getLogger("tunekit").propagate = True
    if failures:
        raise RunFailedError(
            f"prep failed: {'; '.join(failures)}. Details in {out / LOG} and {out / 'summary.json'}; "
            "finished work is cached, so re-running the same command after the fix resumes"
        )
    return 0


def no_windows_problems(rows: list[Any]) -> list[str]:
    """The problem of a run that ends without a single usable training window (empty when it has one)."""
    from collections import Counter

    from tunekit.prep.rows import OK

    if any(r.windows for r in rows if r.status == OK):
        return []
    status = Counter(r.status for r in rows)
    reasons = Counter(
        f"{(r.reason or '').split(':', 1)[0]} in {r.failed_stage}" for r in rows if r.status != OK and r.reason
    )
    why = ", ".join(f"{reason}: {n}" for reason, n in reasons.most_common(3))
    return [
        f"no usable training window: of {len(rows)} tracks {status.get(OK, 0)} are ok, "
        f"{status.get('rejected', 0)} rejected and {status.get('failed', 0)} failed"
        + (f" (most common reasons: {why})" if why else "")
    ]


def stage_models(cfg: PrepConfig) -> dict[str, Any]:
    """What the pipeline's model stages record of their models in summary.json (`models`, by stage)."""
    from tunekit.prep.engine import section_for
    from tunekit.prep.registry import STAGES

    out: dict[str, Any] = {}
    for name in cfg.stages:
        spec = STAGES.get(name)
        if spec is not None and spec.describe:
            facts = spec.function("describe")(section_for(spec, cfg), cfg.models)
            if facts:
                out[name] = facts
    return out


def model_stages(stages: list[str]) -> list[str]:
    """The stages of `stages` that may load a model (the registry gives them a model digest)."""
    from tunekit.prep.registry import STAGES

    return [s for s in stages if s in STAGES and STAGES[s].model_digest]


def shared_paths(cfg: PrepConfig, corpus: Path, out: Path, cache_dir: Path, rows: list[Any],
                 dataset: Path | None = None) -> list[Any]:
    """The folders every Ray node must see at the same path: corpus, out, the stage cache and the model caches
    (tunekit's, where tiny models are built, and the Hugging Face cache real checkpoints are downloaded to); for a
    dataset source also the dataset's folder, where the rows that name their audio by path link to."""
    from tunekit.paths import cache_dir as tunekit_cache
    from tunekit.prep.ray_executor import SharedPath

    witness = str(corpus / rows[0].source_path) if rows else None
    found = [
        SharedPath("corpus", str(corpus), witness),
        SharedPath("out", str(out)),
        SharedPath("cache_dir", str(cache_dir)),
        SharedPath("models.cache_dir", str(Path(cfg.models.cache_dir or tunekit_cache()).expanduser().resolve())),
    ]
    if dataset is not None:
        found.insert(1, SharedPath("corpus", str(dataset)))
    if not cfg.models.tiny:
        from huggingface_hub import constants

        found.append(SharedPath("HF_HUB_CACHE", str(Path(constants.HF_HUB_CACHE).expanduser().resolve())))
    return found


def _one_math_thread_per_process() -> None:
    """Ask BLAS/OpenMP for one thread per process (unless the user chose), before numpy loads them.

    The parallelism of prep is its worker processes (`workers`); threads inside each would only
    compete for the same cores. Has no effect once numpy is imported (e.g. in a notebook).
    """
    if "numpy" in sys.modules:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def worker_preload(stages: list[str]) -> list[str]:
    """Modules worth importing once in the fork server: the stages' modules and the libraries they use."""
    from tunekit.prep.registry import STAGES

    modules = [STAGES[s].fn.partition(":")[0] for s in stages if s in STAGES and STAGES[s].fn]
    return [*modules, "numpy", "soundfile", "soxr", "scipy.signal", "scipy.ndimage", "tunekit.audio.loudness"]


def _console() -> Any:
    from rich.console import Console

    return Console()


def print_summary(summary: dict[str, Any], console: Any = None) -> None:
    """The summary as rich tables: totals, rejects, licences, splits, per-stage throughput."""
    from rich.table import Table

    console = console or _console()
    c, h = summary["counts"], summary["hours"]
    top = Table(title="tunekit prep", show_header=False)
    top.add_column("what")
    top.add_column("value", justify="right")
    top.add_row("status", summary.get("status", "ok"))
    top.add_row("tracks (ok / rejected / failed)", f"{c['tracks']} ({c['ok']} / {c['rejected']} / {c['failed']})")
    top.add_row("hours (input / kept / windows)", f"{h['input']:.3f} / {h['kept']:.3f} / {h['windows']:.3f}")
    top.add_row("windows (full / partial)", f"{c['windows']} ({c['windows_full']} / {c['windows_partial']})")
    top.add_row("silent windows dropped", str(c["windows_silent_dropped"]))
    for name, s in summary["splits"].items():
        top.add_row(f"split {name}", f"{s['tracks']} tracks, {s['windows']} windows, {s['hours']:.3f} h")
    console.print(top)
    if summary["rejects_by_reason"]:
        rej = Table(title="rejected")
        rej.add_column("reason")
        rej.add_column("tracks", justify="right")
        for reason, n in summary["rejects_by_reason"].items():
            rej.add_row(reason, str(n))
        console.print(rej)
    lic = Table(title=f"licences kept (policy {summary['licenses']['policy']})")
    lic.add_column("licence")
    lic.add_column("tracks", justify="right")
    for name, n in summary["licenses"]["kept"].items():
        lic.add_row(name, str(n))
    console.print(lic)
    if summary["licenses"]["share_alike"]["note"]:
        console.print(f"ShareAlike: {summary['licenses']['share_alike']['note']}")
    st = Table(title="stages")
    for col in ("stage", "rows", "computed", "cached", "rejected", "failed", "wall s", "x realtime"):
        st.add_column(col, justify="left" if col == "stage" else "right")
    for name, s in summary["stages"].items():
        xr = s.get("x_realtime")
        st.add_row(
            name,
            str(s["rows"]),
            str(s["computed"]),
            str(s["cached"]),
            str(s["rejected"]),
            str(s["failed"]),
            f"{s['wall_s']:.2f}",
            "-" if xr is None else f"{xr:.1f}",
        )
    console.print(st)
    for problem in summary.get("problems", []):
        console.print(f"prep failed: {problem}", style="bold red", markup=False, highlight=False)

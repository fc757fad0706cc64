"""The prep engine: runs a pipeline's stages over rows, one stage at a time, with caching.

For each stage the engine (in the main process) computes every row's cache key and answers hits
from the cache; only misses go to the executor, whose workers run `execute_task` (stage function +
cache write). A row a stage rejects stops there; an exception becomes a `failed` row with its
traceback in prep.log and never stops the run. Stages with a `reduce` (duplicate detection,
splits) see all rows at once after their map.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tunekit.errors import ConfigError, ConfigErrors
from tunekit.prep.cache import StageCache, stage_key
from tunekit.prep.executors import TaskGroup, WorkerCrash
from tunekit.prep.registry import STAGES, StageSpec
from tunekit.prep.rows import OK, Rejection, StageContext, TrackRow, WindowRow, apply, diff

log = logging.getLogger("tunekit.prep")


@dataclass
class StageStats:
    """What one stage did in this run (reported in summary.json)."""

    name: str  # stage name
    rows: int = 0  # rows that reached the stage
    computed: int = 0  # rows the stage function ran on
    cached: int = 0  # rows answered from the cache
    rejected: int = 0  # rows the stage rejected (cached or computed)
    failed: int = 0  # rows that raised an error
    wall_s: float = 0.0  # wall-clock time of the stage
    compute_s: float = 0.0  # summed time of the stage function over computed rows (all workers)
    audio_s: float = 0.0  # seconds of audio of the computed rows
    rejects: Counter[str] = field(default_factory=Counter)  # rejection codes
    first_error: str | None = None  # the first error a row raised, "Type: message (row)"; tracebacks in prep.log

    def record_error(self, kind: str, message: str, where: str) -> None:
        """Count one row that raised, keeping the first error for the summary and the exit message."""
        self.failed += 1
        if self.first_error is None:
            first_line = message.strip().splitlines()[0] if message.strip() else ""
            self.first_error = f"{kind}: {first_line} ({where})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form with throughput: x_realtime (audio s per wall s) and per-worker x_realtime."""
        d = dataclasses.asdict(self)
        d["rejects"] = dict(sorted(self.rejects.items()))
        d["x_realtime"] = round(self.audio_s / self.wall_s, 2) if self.computed and self.wall_s > 0 else None
        d["x_realtime_per_worker"] = (
            round(self.audio_s / self.compute_s, 2) if self.computed and self.compute_s > 0 else None
        )
        for k in ("wall_s", "compute_s", "audio_s"):
            d[k] = round(d[k], 3)
        return d


class Reporter(Protocol):
    """Progress sink (a rich display, log lines, or nothing)."""

    def start_stage(self, name: str, total: int, audio_s: float) -> None: ...

    def advance(self, name: str, audio_s: float, outcome: str, rejected: bool = False) -> None: ...

    def end_stage(self, stats: StageStats) -> None: ...


class NullReporter:
    """Reports nothing."""

    def start_stage(self, name: str, total: int, audio_s: float) -> None:
        """Ignored."""

    def advance(self, name: str, audio_s: float, outcome: str, rejected: bool = False) -> None:
        """Ignored."""

    def end_stage(self, stats: StageStats) -> None:
        """Ignored."""


@dataclass
class Task:
    """One stage applied to one row (or a batch of rows), as sent to a worker."""

    spec: StageSpec  # the stage to run
    rows: list[TrackRow | WindowRow]  # its input rows (one unless the stage batches)
    keys: list[str]  # each row's cache key ("" for uncached stages)
    section: Any  # the stage's config section
    ctx: StageContext  # paths and run-wide settings


@dataclass
class Outcome:
    """What a stage did to one row: an update, a rejection or an error."""

    update: dict[str, Any] | None = None  # fields the stage changed
    rejection: Rejection | None = None  # or why it rejected the row
    error: tuple[str, str, str] | None = None  # or the error it raised: (type, message, traceback)
    compute_s: float = 0.0  # time the stage function took for this row
    logs: tuple[tuple[int, str], ...] = ()  # (level, message) logged while its task ran (on a task's first row)


def section_for(spec: StageSpec, cfg: Any) -> Any:
    """The config a stage receives: its one section, or a dict of its keys."""
    if len(spec.config_keys) == 1:
        return getattr(cfg, spec.config_keys[0])
    return {k: getattr(cfg, k) for k in spec.config_keys}


def params_of(section: Any) -> Any:
    """Plain data for a section (what goes into the cache key)."""
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return dataclasses.asdict(section)
    if isinstance(section, dict):
        return {k: params_of(v) for k, v in section.items()}
    return section


def _cache(ctx: StageContext) -> StageCache:
    return StageCache(ctx.cache_dir, ctx.out_dir)


_DRIVER_PID: int | None = None  # the process running the Engine: its records reach prep.log directly


class _TaskLogs(logging.Handler):
    """What tunekit's loggers record while a task runs in a worker process (local pool or Ray), which has no
    prep.log of its own: kept, with tracebacks, for the driver to log as its own records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        self.records.append((record.levelno, message))


@contextlib.contextmanager
def _worker_logs() -> Iterator[list[tuple[int, str]]]:
    """In a worker process, the INFO and higher records of every `tunekit.*` logger during the block (not passed
    on: nothing reaches the worker's stderr); in the driver, nothing (its handlers write them as they come)."""
    if os.getpid() == _DRIVER_PID:
        yield []
        return
    root = logging.getLogger("tunekit")
    handler, level, propagate = _TaskLogs(), root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        root.propagate = propagate


def execute_task(task: Task) -> list[Outcome]:
    """Run a stage on a task's rows (in a worker), store each result in the cache, return the outcomes; what the
    stage logged in a worker travels with the first outcome."""
    with _worker_logs() as records:
        outcomes = _execute(task)
    if records and outcomes:
        outcomes[0] = dataclasses.replace(outcomes[0], logs=tuple(records))
    return outcomes


def _execute(task: Task) -> list[Outcome]:
    spec = task.spec
    outcomes: list[Outcome] = []
    t0 = time.perf_counter()
    try:
        fn = spec.function()
        if spec.batch_size:
            results = list(fn(task.rows, task.section, task.ctx))
            if len(results) != len(task.rows):
                raise RuntimeError(f"stage {spec.name} returned {len(results)} results for {len(task.rows)} rows")
        else:
            ctx = dataclasses.replace(task.ctx, key=task.keys[0])
            results = [fn(task.rows[0], task.section, ctx)]
    except Exception as exc:  # noqa: BLE001 - one bad row must not stop the run
        err = (type(exc).__name__, str(exc), traceback.format_exc())
        dt = (time.perf_counter() - t0) / len(task.rows)
        return [Outcome(error=err, compute_s=dt) for _ in task.rows]
    dt = (time.perf_counter() - t0) / len(task.rows)
    cache = _cache(task.ctx)
    for row, key, result in zip(task.rows, task.keys, results):
        if isinstance(result, Rejection):
            outcome = Outcome(rejection=result, compute_s=dt)
        elif isinstance(result, type(row)):
            outcome = Outcome(update=diff(row, result), compute_s=dt)
        else:
            msg = f"stage {spec.name} returned {type(result).__name__}, expected {type(row).__name__} or Rejection"
            outcomes.append(Outcome(error=("TypeError", msg, msg), compute_s=dt))
            continue
        if spec.cache and key:
            rej = None if outcome.rejection is None else dataclasses.asdict(outcome.rejection)
            try:
                cache.put(spec.name, key, outcome.update, rej, dt)
            except OSError as exc:
                outcome = Outcome(error=(type(exc).__name__, str(exc), traceback.format_exc()), compute_s=dt)
        outcomes.append(outcome)
    return outcomes


def _duration(row: TrackRow | WindowRow) -> float:
    return float(row.duration_s or 0.0)


class Engine:
    """Runs stages over rows with a cache, an executor and a progress reporter."""

    def __init__(
        self,
        cfg: Any,
        ctx: StageContext,
        executor_factory: Callable[[], Any],
        reporter: Reporter | None = None,
        registry: dict[str, StageSpec] | None = None,
    ) -> None:
        global _DRIVER_PID
        _DRIVER_PID = os.getpid()  # tasks this process runs itself log straight to its handlers
        self.cfg = cfg
        self.ctx = ctx
        self.cache = _cache(ctx)
        self._executor_factory = executor_factory
        self._executor: Any = None
        self.reporter = reporter or NullReporter()
        self.registry = STAGES if registry is None else registry
        self.stats: dict[str, StageStats] = {}
        self.window_rejects: Counter[str] = Counter()
        self.executor_start_s = 0.0  # time spent starting the worker processes (not charged to a stage)

    @property
    def executor(self) -> Any:
        """The executor, created on first use (a fully cached run starts no worker processes)."""
        if self._executor is None:
            t0 = time.perf_counter()
            self._executor = self._executor_factory()
            self._executor.start()
            self.executor_start_s = time.perf_counter() - t0
        return self._executor

    def close(self) -> None:
        """Release the executor."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def run(self, rows: list[TrackRow], stages: Sequence[str]) -> list[TrackRow]:
        """Run `stages` in order over `rows`; returns the final rows (same order).

        Raises ConfigError(s) before the first stage when a model cannot be found or a value does
        not suit its model (see `check_models`).
        """
        digests = self.model_digests(stages)
        self.check_models(stages)
        for name in stages:
            spec = self.registry[name]
            t0 = time.perf_counter()
            start_before = self.executor_start_s
            stats = StageStats(name)
            self.stats[name] = stats
            section = section_for(spec, self.cfg)
            ctx = dataclasses.replace(self.ctx, stage=name, model_digest=digests.get(name, ""))
            if spec.fn is not None:
                if spec.kind == "window":
                    rows = self._map_windows(spec, rows, section, ctx, stats)
                else:
                    rows = self._map_tracks(spec, rows, section, ctx, stats)
            else:
                stats.rows = sum(1 for r in rows if r.status == OK)
                self.reporter.start_stage(name, 0, 0.0)
            if spec.reduce:
                before = [r.status for r in rows]
                rows = spec.function("reduce")(rows, section, ctx)
                for old, row in zip(before, rows):
                    if old == OK and row.status != OK:
                        stats.rejected += 1
                        stats.rejects[(row.reason or "").split(":", 1)[0]] += 1
            stats.wall_s = time.perf_counter() - t0 - (self.executor_start_s - start_before)
            self.reporter.end_stage(stats)
        return rows

    def model_digests(self, stages: Sequence[str]) -> dict[str, str]:
        """Each model stage's model digest, found before any stage runs: a model that cannot be
        found or downloaded stops the run before hours of work, not after them."""
        found: dict[str, str] = {}
        for name in stages:
            spec = self.registry[name]
            if spec.model_digest:
                section = section_for(spec, self.cfg)
                found[name] = str(spec.function("model_digest")(section, getattr(self.cfg, "models", None)))
        return found

    def check_models(self, stages: Sequence[str]) -> None:
        """Check every value that depends on a stage's model files (a codec's bandwidths, a Demucs
        model's stems and segment, ...) before any stage runs; all problems are raised at once.

        Run after `model_digests`, so the files are local. Without this a value the model does
        not accept would fail every row of its stage, hours into the run.
        """
        problems: list[str] = []
        for name in stages:
            spec = self.registry[name]
            if not spec.preflight:
                continue
            section = section_for(spec, self.cfg)
            try:
                problems += spec.function("preflight")(section, getattr(self.cfg, "models", None))
            except ConfigErrors as exc:
                problems += exc.problems
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigErrors(problems)

    def failures(self, max_failed_fraction: float) -> list[str]:
        """One line per stage that failed (raised) for all of its rows, or for more than
        `max_failed_fraction` of them: the stage, the count and the first error."""
        out = []
        for name, stats in self.stats.items():
            if not stats.rows or not stats.failed:
                continue
            if stats.failed < stats.rows and stats.failed / stats.rows <= max_failed_fraction:
                continue
            unit = "windows" if self.registry[name].kind == "window" else "tracks"
            if stats.failed == stats.rows:
                why = "all of them"
            else:
                why = f"more than max_failed_fraction={max_failed_fraction:g}"
            out.append(
                f"stage {name} failed for {stats.failed} of {stats.rows} {unit} ({why}); "
                f"first error: {stats.first_error}"
            )
        return out

    # -- track stages -------------------------------------------------------------------------

    def _key(self, spec: StageSpec, row: TrackRow | WindowRow, section: Any, ctx: StageContext) -> str:
        if not spec.cache:
            return ""
        fields = {f: getattr(row, f) for f in spec.key_fields}
        return stage_key(spec.name, spec.version, params_of(section), row.audio_key, ctx.model_digest, fields)

    def _apply(self, spec: StageSpec, row: TrackRow, key: str, outcome: Outcome, stats: StageStats) -> TrackRow:
        if outcome.error is not None:
            kind, message, tb = outcome.error
            stats.record_error(kind, message, row.source_path)
            log.error(
                "stage %s failed on %s (%s): %s: %s\n%s", spec.name, row.source_path, row.track_id, kind, message, tb
            )
            return row.failed(f"error:{kind}", message, spec.name)
        if outcome.rejection is not None:
            stats.rejected += 1
            stats.rejects[outcome.rejection.code] += 1
            return row.rejected(outcome.rejection, spec.name)
        new = apply(row, outcome.update or {})
        if spec.produces_audio and key:
            new = dataclasses.replace(new, audio_key=key)
        return new  # type: ignore[return-value]

    def _cached(self, spec: StageSpec, row: Any, key: str, section: Any, ctx: StageContext) -> Outcome | None:
        if spec.cache:
            entry = self.cache.get(spec.name, key)
            if entry is None:
                return None
            rej = entry.get("rejection")
            return Outcome(update=entry.get("update"), rejection=Rejection(**rej) if rej else None)
        if spec.probe:
            result = spec.function("probe")(row, section, ctx)
            if result is None:
                return None
            if isinstance(result, Rejection):
                return Outcome(rejection=result)
            return Outcome(update=diff(row, result))
        return None

    def _run_tasks(self, spec: StageSpec, tasks: list[Task]) -> Any:
        # A stage loads a model when it has a model digest; an executor that hosts models (Ray's actors)
        # also takes the model stages the registry keeps in this process (`inline`).
        holds_model = bool(tasks) and bool(tasks[0].ctx.model_digest)
        if not tasks or (spec.inline and not (holds_model and self.executor.hosts_models)):
            return ((i, execute_task(t)) for i, t in enumerate(tasks))
        return self.executor.imap_unordered(execute_task, tasks, TaskGroup(spec.name, holds_model))

    def _tasks(
        self, spec: StageSpec, pending: list[tuple[int, Any, str]], section: Any, ctx: StageContext
    ) -> list[Task]:
        size = spec.batch_size or 1
        tasks = []
        for j in range(0, len(pending), size):
            part = pending[j : j + size]
            tasks.append(Task(spec, [p[1] for p in part], [p[2] for p in part], section, ctx))
        return tasks

    def _map_tracks(
        self, spec: StageSpec, rows: list[TrackRow], section: Any, ctx: StageContext, stats: StageStats
    ) -> list[TrackRow]:
        rows = list(rows)
        targets = [i for i, r in enumerate(rows) if r.status == OK]
        stats.rows = len(targets)
        self.reporter.start_stage(spec.name, len(targets), sum(_duration(rows[i]) for i in targets))
        pending: list[tuple[int, Any, str]] = []
        for i in targets:
            row = rows[i]
            key = self._key(spec, row, section, ctx)
            hit = self._cached(spec, row, key, section, ctx)
            if hit is None:
                pending.append((i, row, key))
                continue
            stats.cached += 1
            rows[i] = self._apply(spec, row, key, hit, stats)
            self.reporter.advance(spec.name, _duration(rows[i]), "cached", rows[i].status != OK)
        for (i, row, key), outcome in self._compute(spec, pending, section, ctx):
            stats.computed += 1
            stats.compute_s += outcome.compute_s
            rows[i] = self._apply(spec, row, key, outcome, stats)
            seconds = _duration(rows[i]) or _duration(row)
            stats.audio_s += seconds
            self.reporter.advance(spec.name, seconds, "computed", rows[i].status != OK)
        return rows

    def _compute(
        self, spec: StageSpec, pending: list[tuple[Any, Any, str]], section: Any, ctx: StageContext
    ) -> Iterator[tuple[tuple[Any, Any, str], Outcome]]:
        """Run the cache misses on the executor; yield (pending item, outcome) as each task finishes.
        Longest audio goes first, so a long track does not start last and run alone; a crashed
        worker fails every row of its task."""
        tasks = self._tasks(spec, pending, section, ctx)
        starts = list(itertools.accumulate((len(t.rows) for t in tasks), initial=0))
        order = sorted(range(len(tasks)), key=lambda t: -sum(_duration(r) for r in tasks[t].rows))
        for k, outcomes in self._run_tasks(spec, [tasks[t] for t in order]):
            t_index = order[k]
            n = len(tasks[t_index].rows)
            if isinstance(outcomes, WorkerCrash):
                outcomes = [Outcome(error=("WorkerCrash", outcomes.message, outcomes.message))] * n
            for level, message in outcomes[0].logs if outcomes else ():
                log.log(level, "%s", message)
            for j, outcome in enumerate(outcomes):
                yield pending[starts[t_index] + j], outcome

    # -- window stages ------------------------------------------------------------------------

    def _map_windows(
        self, spec: StageSpec, rows: list[TrackRow], section: Any, ctx: StageContext, stats: StageStats
    ) -> list[TrackRow]:
        refs = [(ti, wi) for ti, r in enumerate(rows) if r.status == OK for wi in range(len(r.windows))]
        stats.rows = len(refs)
        windows = {ref: rows[ref[0]].windows[ref[1]] for ref in refs}
        self.reporter.start_stage(spec.name, len(refs), sum(_duration(w) for w in windows.values()))
        results: dict[tuple[int, int], WindowRow | Rejection | None] = {}
        pending: list[tuple[Any, Any, str]] = []
        for ref in refs:
            w = windows[ref]
            key = self._key(spec, w, section, ctx)
            hit = self._cached(spec, w, key, section, ctx)
            if hit is None:
                pending.append((ref, w, key))
                continue
            stats.cached += 1
            results[ref] = self._apply_window(spec, w, key, hit, stats)
            self.reporter.advance(spec.name, _duration(w), "cached", isinstance(results[ref], Rejection))
        for (ref, w, key), outcome in self._compute(spec, pending, section, ctx):
            stats.computed += 1
            stats.compute_s += outcome.compute_s
            stats.audio_s += _duration(w)
            results[ref] = self._apply_window(spec, w, key, outcome, stats)
            self.reporter.advance(spec.name, _duration(w), "computed", isinstance(results[ref], Rejection))
        rows = list(rows)
        for ti in sorted({ref[0] for ref in refs}):
            verdicts = [results.get((ti, wi), w) for wi, w in enumerate(rows[ti].windows)]
            kept = [v for v in verdicts if isinstance(v, WindowRow)]
            rows[ti] = dataclasses.replace(rows[ti], windows=kept)
            if not kept:
                rows[ti] = _without_windows(rows[ti], spec.name, [v for v in verdicts if isinstance(v, Rejection)])
        return rows

    def _apply_window(
        self, spec: StageSpec, w: WindowRow, key: str, outcome: Outcome, stats: StageStats
    ) -> WindowRow | Rejection:
        if outcome.error is not None:
            kind, message, tb = outcome.error
            stats.record_error(kind, message, f"window {w.window_id}")
            log.error("stage %s failed on window %s: %s: %s\n%s", spec.name, w.window_id, kind, message, tb)
            self.window_rejects[f"{spec.name}:error"] += 1
            return Rejection(f"error:{kind}", message)
        if outcome.rejection is not None:
            stats.rejected += 1
            stats.rejects[outcome.rejection.code] += 1
            self.window_rejects[f"{spec.name}:{outcome.rejection.code}"] += 1
            return outcome.rejection
        new = apply(w, outcome.update or {})
        if spec.produces_audio and key:
            new = dataclasses.replace(new, audio_key=key)
        return new  # type: ignore[return-value]


def _without_windows(row: TrackRow, stage: str, verdicts: list[Rejection]) -> TrackRow:
    """A track whose every window a window stage dropped: failed when any window raised an error,
    else rejected (`no_windows`). It must not stay `ok` with nothing left to train on."""
    errors = [v for v in verdicts if v.reason.startswith("error:")]
    n = len(verdicts)
    if errors:
        first = errors[0]
        detail = f"{len(errors)} of {n} windows failed in stage {stage}; first: {first.detail}"
        return row.failed(first.reason, detail, stage)
    codes = ", ".join(sorted({v.code for v in verdicts}))
    return row.rejected(Rejection("no_windows", f"stage {stage} rejected all {n} windows ({codes})"), stage)

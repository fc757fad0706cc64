"""Executors run a picklable task function over a list of items and yield (index, result) as they finish.

They know nothing about stages: the engine hands them `tunekit.prep.engine.execute_task` and task
objects, with a `TaskGroup` saying whose tasks they are and whether the function keeps a model
loaded. `SerialExecutor` runs in the calling process (workers=1); `LocalExecutor` uses a process
pool (forkserver where available, else spawn: no state inherited from the parent) with chunked
submission; `tunekit.prep.ray_executor.RayExecutor` runs them on a Ray cluster (`executor=ray`).
A worker that dies (a decoder crashing on a corrupt file) does not stop the run: the tasks that
were in flight are retried one at a time, and the one that kills its worker again is reported as
a `WorkerCrash` result.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class WorkerCrash:
    """The result for an item whose worker process died while running it."""

    message: str  # what happened, for the failed row's detail


@dataclass(frozen=True)
class TaskGroup:
    """Whose tasks an `imap_unordered` call runs: a name for per-group settings (a stage's GPUs on Ray) and
    whether the task function keeps a model loaded, so that it is worth running in long-lived workers."""

    name: str  # the group's name (the engine uses the stage's)
    holds_model: bool = False  # the function loads a model once per process and keeps it for the next tasks


def default_workers() -> int:
    """One worker per CPU core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class SerialExecutor:
    """Runs every item in the calling process, in order."""

    workers = 1
    hosts_models = False  # model stages the engine keeps in its own process stay there

    def __init__(self, preload: Sequence[str] = ()) -> None:
        self.preload = list(preload)

    def start(self) -> None:
        """Import the `preload` modules now, as the process pool's workers do before their first task,
        so that stage times measure the same work with one worker as with many."""
        import importlib

        for module in self.preload:
            try:
                importlib.import_module(module)
            except ImportError:  # as the fork server does: the stage that needs it says so when it runs
                pass

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Sequence[Any], group: TaskGroup | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(item)) for each item."""
        for i, item in enumerate(items):
            yield i, fn(item)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _noop() -> None:
    return None


def _run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    return [fn(item) for item in items]


class LocalExecutor:
    """A process pool of `workers` processes; the pool starts on first use and lives until `close`.

    Its processes live for the whole run, so a model a stage loads stays loaded across its tasks."""

    hosts_models = False  # model stages the engine keeps in its own process stay there

    def __init__(
        self, workers: int, max_chunk: int = 8, start_method: str | None = None, preload: Sequence[str] = ()
    ) -> None:
        self.workers = max(1, workers)
        self.max_chunk = max(1, max_chunk)
        self.preload = list(preload)
        self._set_env: dict[str, str] = {}
        methods = multiprocessing.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # One BLAS/OpenMP thread per worker: the parallelism is the processes; N workers each
            # running N threads only fight over the cores. An explicit user setting is kept.
            for var in _THREAD_VARS:
                if var not in os.environ:
                    self._set_env[var] = "1"
                    os.environ[var] = "1"
            ctx = multiprocessing.get_context(self.start_method)
            if self.start_method == "forkserver":
                # Modules imported once by the fork server, so each worker starts with them loaded.
                ctx.set_forkserver_preload(["tunekit.prep.engine", *self.preload])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def _reset_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def start(self) -> None:
        """Start every worker now (so the start-up cost is not charged to the first stage)."""
        pool = self._ensure_pool()
        for fut in [pool.submit(_noop) for _ in range(self.workers)]:
            fut.result()

    def chunk_size(self, n: int) -> int:
        """Items per submitted chunk: about four chunks per worker, at most `max_chunk`."""
        return max(1, min(self.max_chunk, math.ceil(n / (self.workers * 4))))

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Sequence[Any], group: TaskGroup | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(item)) as chunks complete; a crashed worker's items are retried alone."""
        if not items:
            return
        size = self.chunk_size(len(items))
        chunks = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
        suspects: list[int] = []
        pool = self._ensure_pool()
        # Keep at most 2 chunks per worker in flight so a broken pool loses little work.
        queue = list(reversed(chunks))
        running: dict[Future[list[Any]], list[int]] = {}
        while queue or running:
            while queue and len(running) < self.workers * 2:
                idx = queue.pop()
                running[pool.submit(_run_chunk, fn, [items[i] for i in idx])] = idx
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                idx = running.pop(fut)
                try:
                    results = fut.result()
                except BrokenProcessPool:
                    suspects += idx
                    broken = True
                    continue
                yield from zip(idx, results)
            if broken:
                for fut, idx in running.items():
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield from zip(idx, fut.result())
                    else:
                        suspects += idx
                running.clear()
                self._reset_pool()
                pool = self._ensure_pool()
        for i in sorted(suspects):
            pool = self._ensure_pool()
            fut = pool.submit(_run_chunk, fn, [items[i]])
            try:
                yield i, fut.result()[0]
            except BrokenProcessPool:
                self._reset_pool()
                yield (
                    i,
                    WorkerCrash("the worker process died while running this item (a decoder crash or out of memory)"),
                )

    def close(self) -> None:
        """Shut the pool down and restore the thread settings of the environment."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for var in self._set_env:
            os.environ.pop(var, None)
        self._set_env.clear()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(
    workers: int,
    preload: Sequence[str] = (),
    config: Any = None,
    shared: Sequence[Any] = (),
    model_groups: Sequence[str] = (),
) -> Any:
    """The executor the `executor` section (`tunekit.prep.config.ExecutorConfig`) names; local when None.

    local: SerialExecutor for one worker, LocalExecutor otherwise (0 means one per core).
    ray: a `tunekit.prep.ray_executor.RayExecutor` that checks at start that every node sees the
    `shared` paths (`SharedPath`s) and can hold one actor of each of `model_groups`.
    `preload`: modules imported before the first task (in the fork server for a pool, in every
    warmed worker on Ray).
    """
    if config is not None and config.name == "ray":
        import importlib

        ray_executor = importlib.import_module("tunekit.prep.ray_executor")  # by name: it imports this module
        return ray_executor.RayExecutor(config, preload=preload, shared=shared, model_groups=model_groups)
    n = default_workers() if workers == 0 else workers
    return SerialExecutor(preload) if n <= 1 else LocalExecutor(n, preload=preload)

"""The Ray executor (`tunekit prep executor=ray`): the engine's tasks on a Ray cluster, Ray core only.

The engine, the cache keys, the reduces and the tables stay in the driver (this process); only the task
function (`execute_task`: a stage over a few rows, plus its cache write) runs on the cluster, so a run's
outputs and its resume are the local executor's. Stages without a model run as Ray tasks, chunked, with a
bounded number in flight. A model stage runs on its own actors, created when the stage starts and killed
when its map ends: each loads the model once and keeps it for every batch; each reserves
`executor.model_gpus` (or `executor.stage_gpus.<stage>`, fractions share a GPU) and `model_cpus`. A worker
only sees the GPUs it reserved, so a stage's `device=auto` is the GPU Ray gave it.

Failures are the local executor's: a chunk whose worker dies (a decoder crash, Ray's memory monitor) has its
items retried once, one per task or actor call; an item that kills its worker again becomes a `WorkerCrash`
result (a failed row with the reason). Ray retries nothing by itself (`max_retries=0`, `max_restarts=0`); a
dead actor is replaced once per death. Tasks and actors cap OMP/OpenBLAS/MKL at `executor.threads` threads,
and tasks that reserve no GPU see none.

Every node must see the corpus, `out`, the stage cache and the model caches at the same path: `start` checks
it with a task on each node and fails with the fix before any work. Without `executor.address` a local Ray
instance is started (no dashboard, `executor.num_cpus`, a small object store) and stopped at `close`; a Ray
already initialised in this process (a notebook, a test) is used as it is and left running.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.errors import ConfigError, ConfigErrors, StageUnavailableError
from tunekit.prep.executors import TaskGroup, WorkerCrash

log = logging.getLogger("tunekit.prep")

# Passed on to every worker when set here, so the workers resolve the same model caches and run offline alike.
FORWARDED_ENV = (
    "TUNEKIT_CACHE",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TORCH_HOME",
)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CALLS_PER_ACTOR = 2  # calls queued on an actor: it starts its next batch while the driver reads the last one
MOUNT_HINT = (
    "every node must mount the same shared storage (NFS, Lustre, a cloud file system) at the same path; "
    "mount it there, or choose paths on shared storage"
)


@dataclass(frozen=True)
class SharedPath:
    """A folder every node must see at the same path, named by the config key that sets it."""

    key: str  # the config key (or what sets it), named in the error: corpus, out, cache_dir, models.cache_dir
    path: str  # the folder, absolute
    witness: str | None = None  # a file in it every node must see (for folders the driver must not write to)


def _run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """The body of every Ray task and actor call: fn over a chunk of items."""
    return [fn(item) for item in items]


def _preload(modules: list[str]) -> int:
    """Import `modules` in this worker (as the local pool's fork server does); returns the worker's pid."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # the stage that needs it says so when it runs
            pass
    return os.getpid()


def _storage_problems(checks: list[tuple[str, str, str | None, str | None]]) -> list[str]:
    """On one node: what it does not see of (key, folder, witness file, expected witness content)."""
    out = []
    for key, folder, witness, content in checks:
        if not os.path.isdir(folder):
            out.append(f"{key}={folder} (no such folder)")
            continue
        if witness is None:
            continue
        try:
            seen = Path(witness).read_text(encoding="utf-8") if content is not None else None
        except OSError:
            seen = ""
        if (content is None and not os.path.isfile(witness)) or (content is not None and seen != content):
            out.append(f"{key}={folder} (the folder is there but is not the driver's: {witness} is missing)")
    return out


class _StageActor:
    """A long-lived worker of one model stage: the stage's module-level model cache lives as long as it does."""

    def ready(self) -> str:
        """Answers once the actor runs (its resources were granted); the node it runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def run(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """fn over a chunk of items."""
        return _run_chunk(fn, items)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


class _Tasks:
    """Ray tasks: at most `capacity` chunks in flight."""

    def __init__(self, remote: Any, capacity: int) -> None:
        self.remote = remote
        self.capacity = capacity
        self.running = 0

    def room(self) -> bool:
        return self.running < self.capacity

    def submit(self, fn: Callable[[Any], Any], chunk: list[Any]) -> Any:
        self.running += 1
        return self.remote.remote(fn, chunk)

    def finished(self, ref: Any, crashed: bool) -> None:
        self.running -= 1

    def starting(self) -> list[Any]:
        return []

    def started(self, ref: Any) -> None:
        raise AssertionError("tasks have nothing to start")

    def wait_s(self) -> float | None:
        return None

    def alone(self) -> None:
        """One task in flight from now on: an item retried alone runs with nothing beside it (as in the local
        pool), so a crash that came from a neighbour's memory use is not repeated."""
        self.capacity = 1

    def close(self) -> None:
        """Nothing held."""


class _Actors:
    """One model stage's actors: created at once, each fed `CALLS_PER_ACTOR` chunks, replaced when one dies."""

    def __init__(self, actor_class: Any, count: int, stage: str, timeout_s: float, needs: str) -> None:
        self.actor_class = actor_class
        self.stage = stage
        self.timeout_s = timeout_s
        self.needs = needs  # what one actor reserves, for the error message
        self.pending: dict[Any, Any] = {}  # ready() ref -> actor still starting
        self.load: dict[Any, int] = {}  # actor -> calls in flight, for actors that are running
        self.owner: dict[Any, Any] = {}  # call ref -> actor
        self.start_errors: list[str] = []
        self.calls_per_actor = CALLS_PER_ACTOR
        self.serial = False  # retries: one call at a time
        self.waiting_since = time.monotonic()
        for _ in range(count):
            self._spawn()

    def _spawn(self) -> None:
        actor = self.actor_class.remote()
        self.pending[actor.ready.remote()] = actor

    def room(self) -> bool:
        if self.serial and self.owner:
            return False
        return any(n < self.calls_per_actor for n in self.load.values())

    def alone(self) -> None:
        """One call in flight over all the stage's actors from now on: an item retried alone runs with nothing
        beside it (as in the local pool), so a crash that came from a neighbour's memory use is not repeated."""
        self.calls_per_actor = 1
        self.serial = True

    def submit(self, fn: Callable[[Any], Any], chunk: list[Any]) -> Any:
        actor = min(self.load, key=lambda a: self.load[a])  # room() made sure one has a free slot
        ref = actor.run.remote(fn, chunk)
        self.load[actor] += 1
        self.owner[ref] = actor
        return ref

    def finished(self, ref: Any, crashed: bool) -> None:
        import ray

        actor = self.owner.pop(ref)
        if actor not in self.load:  # already replaced after another of its calls failed
            return
        if not crashed:
            self.load[actor] -= 1
            return
        del self.load[actor]
        ray.kill(actor)
        self._spawn()
        if not self.load:
            self.waiting_since = time.monotonic()

    def starting(self) -> list[Any]:
        return list(self.pending)

    def started(self, ref: Any) -> None:
        import ray

        actor = self.pending.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError as exc:
            self.start_errors.append(_first_line(exc))
            if not self.pending and not self.load:
                raise StageUnavailableError(
                    f"no Ray actor of stage {self.stage} could start: {'; '.join(self.start_errors[:3])}"
                ) from exc
            return
        self.load[actor] = 0

    def wait_s(self) -> float | None:
        """How long the driver may wait for a result; raises once no actor has run for `start_timeout_s`."""
        if self.load:
            return None
        left = self.timeout_s - (time.monotonic() - self.waiting_since)
        if left <= 0:
            raise ConfigError(
                f"no Ray actor of stage {self.stage} started within executor.start_timeout_s={self.timeout_s:g} s: "
                f"each reserves {self.needs} and the cluster has no room for one; lower "
                f"executor.model_gpus (or executor.stage_gpus.{self.stage}) or executor.model_cpus, "
                "or add nodes",
                key="executor.model_gpus",
            )
        return left

    def close(self) -> None:
        import ray

        for actor in [*self.load, *self.pending.values()]:
            ray.kill(actor)
        self.load.clear()
        self.pending.clear()


class RayExecutor:
    """Runs the engine's task function on a Ray cluster: tasks for stages without a model, actors for model
    stages. Same interface as `tunekit.prep.executors.LocalExecutor`."""

    hosts_models = True  # model stages run on actors, also those the local executors keep in the driver

    def __init__(
        self,
        config: Any,
        preload: Sequence[str] = (),
        shared: Sequence[SharedPath] = (),
        model_groups: Sequence[str] = (),
    ) -> None:
        self.config = config  # tunekit.prep.config.ExecutorConfig
        self.preload = list(preload)
        self.shared = list(shared)
        self.model_groups = list(model_groups)
        self.workers = 0  # the cluster's CPUs, known once started
        self._started_ray = False
        self._task: Any = None
        self._task_options: dict[str, Any] = {}
        self._actor_base: dict[str, Any] = {}
        self._nodes: list[dict[str, Any]] = []

    # -- start and stop ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Join or start Ray, check the nodes (CPUs, GPUs for the model stages, shared storage) and warm one
        worker per CPU with the stage modules. Raises ConfigError(s) naming the key to change."""
        import ray

        cfg = self.config
        if not ray.is_initialized():
            common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
            try:
                if cfg.address:
                    ray.init(address=cfg.address, **common)
                else:
                    cpus = cfg.num_cpus or os.cpu_count() or 1
                    ray.init(
                        num_cpus=cfg.num_cpus,
                        object_store_memory=cfg.object_store_mb * 2**20,
                        include_dashboard=False,
                        # Ray stops idle workers beyond one per CPU, actors included: without room for both,
                        # a model stage's actors would cost the next stage its warmed task workers.
                        _system_config={"num_workers_soft_limit": 2 * cpus},
                        **common,
                    )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"executor.address={cfg.address}" if cfg.address else "a local Ray instance"
                raise ConfigError(
                    f"cannot start Ray with {where}: {_first_line(exc)}; check that the cluster runs "
                    "(`ray status` on its head node) and give its address, or remove executor.address "
                    "to start a local instance",
                    key="executor.address",
                ) from exc
            self._started_ray = True
        self._nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        self.workers = int(sum(n["Resources"]["CPU"] for n in self._nodes))
        if not self.workers:
            raise ConfigError("the Ray cluster has no CPUs for prep's tasks; add a worker node", key="executor.address")
        env = self._worker_env()
        self._task_options = {
            "num_cpus": 1,
            "max_retries": 0,
            "runtime_env": {"env_vars": {**env, **self._threads(cfg.threads)}},
        }
        self._task = ray.remote(_run_chunk).options(**self._task_options)
        actor_threads = max(cfg.threads, int(cfg.model_cpus))
        self._actor_base = {
            "max_restarts": 0,
            "max_task_retries": 0,
            "runtime_env": {"env_vars": {**env, **self._threads(actor_threads)}},
        }
        self._check_model_room()
        self._check_storage()
        self._warm()
        gpus = sum(n["Resources"].get("GPU", 0) for n in self._nodes)
        where = cfg.address or "local instance"
        log.info("ray: %s, %d node(s), %d CPUs, %g GPUs", where, len(self._nodes), self.workers, gpus)

    def close(self) -> None:
        """Stop the Ray instance this executor started (or disconnect from the cluster it joined)."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _threads(n: int) -> dict[str, str]:
        return {var: str(n) for var in THREAD_VARS}

    @staticmethod
    def _worker_env() -> dict[str, str]:
        """Environment of every task and actor: the driver's cache and offline settings; no GPU unless reserved."""
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env["RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"] = "1"  # a task with num_gpus=0 gets CUDA_VISIBLE_DEVICES=""
        return env

    def _actor_options(self, stage: str) -> dict[str, Any]:
        return {"num_cpus": self.config.model_cpus, "num_gpus": self.config.gpus_for(stage)}

    def _actors_that_fit(self, stage: str) -> int:
        """How many actors of `stage` the nodes hold at once, by CPUs and GPUs."""
        opts = self._actor_options(stage)
        total = 0
        for node in self._nodes:
            res = node["Resources"]
            fit = math.floor(res.get("CPU", 0) / opts["num_cpus"] + 1e-9)
            if opts["num_gpus"]:
                fit = min(fit, math.floor(res.get("GPU", 0) / opts["num_gpus"] + 1e-9))
            total += fit
        return total

    def _check_model_room(self) -> None:
        """Every model stage of the pipeline must fit one actor on some node, or its actors would wait forever."""
        problems = []
        for stage in self.model_groups:
            if self._actors_that_fit(stage):
                continue
            opts = self._actor_options(stage)
            gpus = max((n["Resources"].get("GPU", 0) for n in self._nodes), default=0)
            cpus = max(n["Resources"]["CPU"] for n in self._nodes)
            own = getattr(self.config.stage_gpus, stage, None)
            key = f"executor.stage_gpus.{stage}" if own is not None else "executor.model_gpus"
            problems.append(
                f"stage {stage}: each Ray actor would reserve {opts['num_gpus']:g} GPUs and {opts['num_cpus']:g} CPUs "
                f"but the largest node has {gpus:g} GPUs and {cpus:g} CPUs; lower {key} or executor.model_cpus"
            )
        if problems:
            raise ConfigErrors(problems)

    def _check_storage(self) -> None:
        """A task on each node checks that it sees every shared folder, and the driver's files in it."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not self.shared:
            return
        token = secrets.token_hex(8)
        written: list[Path] = []
        checks: list[tuple[str, str, str | None, str | None]] = []
        for item in self.shared:
            if not Path(item.path).is_dir():  # a model cache nothing was put in yet
                continue
            marker = Path(item.path) / f".tunekit-storage-check-{token}"
            try:
                marker.write_text(token, encoding="utf-8")
                written.append(marker)
                checks.append((item.key, item.path, str(marker), token))
            except OSError:  # a folder the driver only reads (a corpus on a read-only mount)
                checks.append((item.key, item.path, item.witness, None))
        try:
            probe = ray.remote(_storage_problems)
            refs = {}
            for node in self._nodes:
                on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                refs[probe.options(num_cpus=0, max_retries=0, scheduling_strategy=on_node).remote(checks)] = node
            done, late = ray.wait(list(refs), num_returns=len(refs), timeout=self.config.start_timeout_s)
            problems = []
            for ref in done:
                node = refs[ref]["NodeManagerAddress"]
                problems += [f"node {node} does not see {p}" for p in ray.get(ref)]
            problems += [
                f"node {refs[r]['NodeManagerAddress']} did not answer the storage check within "
                f"executor.start_timeout_s={self.config.start_timeout_s:g} s"
                for r in late
            ]
        finally:
            for marker in written:
                marker.unlink(missing_ok=True)
        if problems:
            raise ConfigErrors([f"{p}: {MOUNT_HINT}" for p in problems])

    def _warm(self) -> None:
        """One task per CPU imports the stage modules, so stage times measure the stages, not the imports."""
        import ray

        warm = ray.remote(_preload).options(**self._task_options)
        refs = [warm.remote(self.preload) for _ in range(self.workers)]
        ray.wait(refs, num_returns=len(refs), timeout=self.config.start_timeout_s)

    # -- running -------------------------------------------------------------------------------------------------

    def chunk_size(self, n: int, workers: int) -> int:
        """Items per task or actor call: about four per worker, at most `executor.chunk_size`."""
        return max(1, min(self.config.chunk_size, math.ceil(n / (max(1, workers) * 4))))

    def imap_unordered(
        self, fn: Callable[[Any], Any], items: Sequence[Any], group: TaskGroup | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Yield (index, fn(item)) as chunks complete; a crashed worker's items are retried alone, and one
        that crashes its worker again yields a `WorkerCrash`."""
        if not items:
            return
        if self._task is None:
            self.start()
        if group is not None and group.holds_model:
            count = self.config.model_actors or min(self._actors_that_fit(group.name), len(items))
            opts = self._actor_options(group.name)
            needs = f"{opts['num_cpus']:g} CPUs and {opts['num_gpus']:g} GPUs"
            import ray

            actor_class = ray.remote(_StageActor).options(**self._actor_base, **opts)
            lane: _Tasks | _Actors = _Actors(actor_class, max(1, count), group.name, self.config.start_timeout_s, needs)
            workers = count
        else:
            lane = _Tasks(self._task, self.config.max_in_flight or 2 * self.workers)
            workers = self.workers
        try:
            size = self.chunk_size(len(items), workers)
            chunks = [list(range(i, min(i + size, len(items)))) for i in range(0, len(items), size)]
            suspects: list[int] = []
            yield from self._drive(lane, fn, items, chunks, suspects)
            lane.alone()
            yield from self._drive(lane, fn, items, [[i] for i in sorted(suspects)], None)
        finally:
            lane.close()

    def _drive(
        self,
        lane: _Tasks | _Actors,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        chunks: list[list[int]],
        suspects: list[int] | None,
    ) -> Iterator[tuple[int, Any]]:
        """Run `chunks` on `lane`. The items of a chunk whose worker died go to `suspects`, or, on the
        retry (`suspects` None), each becomes a WorkerCrash."""
        import ray

        crashes = (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.RayActorError,
            ray.exceptions.OutOfMemoryError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
            ray.exceptions.LocalRayletDiedError,
        )
        queue = list(reversed(chunks))
        running: dict[Any, list[int]] = {}
        while queue or running:
            while queue and lane.room():
                idx = queue.pop()
                running[lane.submit(fn, [items[i] for i in idx])] = idx
            done, _ = ray.wait([*running, *lane.starting()], num_returns=1, timeout=lane.wait_s())
            for ref in done:
                if ref not in running:
                    lane.started(ref)
                    continue
                idx = running.pop(ref)
                try:
                    results = ray.get(ref)
                except crashes as exc:
                    lane.finished(ref, crashed=True)
                    if suspects is not None:
                        suspects += idx
                        continue
                    message = (
                        "the worker process died while running this item (a decoder crash or out of memory); "
                        f"Ray: {_first_line(exc)}"
                    )
                    yield from ((i, WorkerCrash(message)) for i in idx)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the task function itself raised: a bug, as locally
                    if isinstance(exc.cause, ImportError):
                        raise StageUnavailableError(
                            f"a Ray worker cannot import what prep runs ({exc.cause}); install the same tunekit, "
                            "with the extras the pipeline needs, on every node of the cluster"
                        ) from exc
                    raise exc.as_instanceof_cause() from None
                lane.finished(ref, crashed=False)
                yield from zip(idx, results)

"""`tunekit prep executor=ray`: the same outputs as the local executor, the same failure semantics, and a
config that says what to fix.

One local Ray instance (2 CPUs, no dashboard, a small object store) serves the whole module; it is started
through `RayExecutor`, as `tunekit prep executor=ray` starts one, and the runs below join it. Its workers
find this module on PYTHONPATH, for the stage that kills its worker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

# Ray workers import this module to run its functions, so it imports little at the top; each test imports
# what it uses.

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed: pip install 'tunekit[ray]'")
TESTS = Path(__file__).resolve().parent
CRASH_ON = "t01.wav"  # the file whose decode kills its worker in the crash test


# -- config (no Ray needed) ----------------------------------------------------------------------------------


def _problems(tmp_path: Path, *overrides: str) -> list[str]:
    from tunekit.config.compose import load_config
    from tunekit.errors import ConfigErrors
    from tunekit.prep.config import PrepConfig

    try:
        load_config("prep", [f"corpus={tmp_path}", f"out={tmp_path}/out", *overrides], PrepConfig)
    except ConfigErrors as exc:
        return exc.problems
    return []


def test_executor_is_a_config_group_and_its_keys_are_checked(tmp_path, monkeypatch):
    """`executor=ray` picks the group; without Ray installed it fails validation with the install command."""
    from tunekit.config.compose import load_config
    from tunekit.prep.config import PrepConfig

    cfg = load_config("prep", [f"corpus={tmp_path}", "out=x", "executor=ray", "executor.address=auto"], PrepConfig)
    assert (cfg.executor.name, cfg.executor.address) == ("ray", "auto")
    assert load_config("prep", [f"corpus={tmp_path}", "out=x"], PrepConfig).executor.name == "local"

    real_find_spec = importlib.util.find_spec
    without_ray = lambda name, *a: None if name == "ray" else real_find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", without_ray)
    assert _problems(tmp_path, "executor=ray") == [
        "executor=ray needs Ray, which is not installed: pip install 'tunekit[ray]' (or use executor=local)"
    ]
    assert _problems(tmp_path) == []  # the local executor does not need it
    monkeypatch.undo()

    problems = _problems(tmp_path, "executor=ray", "executor.model_gpus=1.5", "executor.chunk_size=0")
    assert [p.split("=")[0] for p in problems] == ["executor.chunk_size", "executor.model_gpus"], problems
    assert _problems(tmp_path, "executor.address=auto") == [
        "executor.address=auto is for Ray; add executor=ray (or remove executor.address)"
    ]


def test_a_model_stage_device_comes_from_ray(tmp_path):
    """On Ray a fixed cuda:N, or cuda for a stage given no GPU, is refused before any work, naming the key."""
    problems = _problems(tmp_path, "executor=ray", "tokens.device=cuda:1", "separate.device=cuda")
    assert len(problems) == 2, problems
    assert problems[0].startswith("separate.device=cuda but its Ray actors reserve no GPU"), problems
    assert problems[1].startswith("tokens.device=cuda:1: on Ray each actor sees only the GPU it reserved"), problems
    assert _problems(tmp_path, "executor=ray", "separate.device=cuda", "executor.stage_gpus.separate=0.5") == []
    assert _problems(tmp_path, "tokens.device=cuda:1") == []  # the local executor honours it


def test_every_model_stage_has_its_gpu_key():
    from tunekit.prep.config import ExecutorConfig, StageGpus
    from tunekit.prep.registry import ORDER, STAGES

    model_stages = [name for name in ORDER if STAGES[name].model_digest is not None]
    assert [f for f in StageGpus.__dataclass_fields__] == model_stages
    cfg = ExecutorConfig(model_gpus=0.25)
    cfg.stage_gpus.separate = 1.0
    assert (cfg.gpus_for("separate"), cfg.gpus_for("tokens")) == (1.0, 0.25)


# -- what the engine tells an executor (no Ray needed) -----------------------------------------------------------


def _titled(row, section, ctx):
    import dataclasses

    return dataclasses.replace(row, title="done")


def _a_model(section, models) -> str:
    return "digest-of-a-model"


def _no_model(section, models) -> str:
    return ""


class _Recording:
    """An executor that runs tasks in this process and records the groups it was given."""

    workers = 1

    def __init__(self, hosts_models: bool) -> None:
        self.hosts_models = hosts_models
        self.groups: list[Any] = []

    def start(self) -> None: ...

    def close(self) -> None: ...

    def imap_unordered(self, fn, items, group=None):
        self.groups.append(group)
        return ((i, fn(item)) for i, item in enumerate(items))


@pytest.mark.parametrize("hosts_models", [False, True])
def test_the_engine_names_each_stage_and_whether_it_holds_a_model(tmp_path, hosts_models):
    """Model stages reach the executor as groups that hold a model; a model stage the registry keeps in the driver
    (`inline`, like ACE-Step's latents) goes to an executor that hosts models (Ray's actors), and a stage that is
    inline without a model (the licence check) never reaches the executor."""
    from tunekit.prep.config import PrepConfig
    from tunekit.prep.engine import Engine
    from tunekit.prep.executors import TaskGroup
    from tunekit.prep.registry import StageSpec
    from tunekit.prep.rows import StageContext, TrackRow

    def spec(name: str, **kw: Any) -> StageSpec:
        return StageSpec(name, "test_prep_ray:_titled", ("window",), cache=False, **kw)

    registry = {
        "plain": spec("plain"),
        "model": spec("model", model_digest="test_prep_ray:_a_model"),
        "off": spec("off", model_digest="test_prep_ray:_no_model"),  # a model stage whose model is switched off
        "inline_model": spec("inline_model", inline=True, model_digest="test_prep_ray:_a_model"),
        "inline": spec("inline", inline=True),
    }
    recording = _Recording(hosts_models)
    ctx = StageContext(str(tmp_path), str(tmp_path), str(tmp_path / ".cache"))
    engine = Engine(PrepConfig(), ctx, lambda: recording, registry=registry)
    engine.run([TrackRow("a", "a.wav")], list(registry))
    expected = [TaskGroup("plain", False), TaskGroup("model", True), TaskGroup("off", False)]
    if hosts_models:
        expected.append(TaskGroup("inline_model", True))
    assert recording.groups == expected


# -- the Ray instance ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module, started by the executor (as `executor=ray` without an address
    starts one); yields its address for drivers in other processes."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed: pip install 'tunekit[ray]'")
    import ray

    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.ray_executor import RayExecutor

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # no ~/.ray/auth_token
        mp.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        executor = RayExecutor(ExecutorConfig(name="ray", num_cpus=2, object_store_mb=128))
        executor.start()
        try:
            assert ray.cluster_resources()["CPU"] == 2 and executor.workers == 2
            yield ray.get_runtime_context().gcs_address
        finally:
            executor.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def executor(ray_address):
    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.ray_executor import RayExecutor

    ex = RayExecutor(ExecutorConfig(name="ray"))
    ex.start()
    yield ex
    ex.close()


# -- the executor --------------------------------------------------------------------------------------------


def _crowded_dies(item: tuple[str, int]) -> int:
    """Dies when another call runs at the same time (a crash from memory pressure), else squares."""
    folder, x = item
    me = Path(folder) / f"{os.getpid()}-{x}"
    me.touch()
    time.sleep(0.4)
    crowded = [p for p in Path(folder).iterdir() if p != me]
    me.unlink()
    if crowded:
        os._exit(1)
    return x * x


def _square_or_die(x: int) -> int:
    if x == 3:
        os._exit(1)  # a decoder crash takes the whole worker process down
    return x * x


_SERVED: list[int] = []  # module state of the worker process, as a stage's loaded model is


def _where(x: int) -> tuple[int, int, dict[str, str | None]]:
    """(pid, items this process has served so far, its thread and GPU settings)."""
    _SERVED.append(x)
    time.sleep(0.05)
    keys = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
    return os.getpid(), len(_SERVED), {k: os.environ.get(k) for k in keys}


@needs_ray
def test_what_a_stage_logs_on_a_ray_worker_reaches_the_driver_once(executor, tmp_path):
    """The records a stage logs on a Ray worker travel back with its outcomes; the driver logs each once (so they
    reach prep.log), at their level, and nothing below INFO."""
    from test_prep_helpers import run_noted_stage

    assert os.getpid() not in run_noted_stage(executor, tmp_path)


@needs_ray
@pytest.mark.parametrize("holds_model", [False, True], ids=["tasks", "actors"])
def test_a_crashing_worker_fails_its_item_alone(executor, holds_model):
    """The local executor's semantics on tasks and on actors: the item that kills its worker twice is a
    WorkerCrash with the reason; the rest of its chunk is retried alone and done."""
    from tunekit.prep.executors import TaskGroup, WorkerCrash

    group = TaskGroup("tokens", holds_model=holds_model)
    results = dict(executor.imap_unordered(_square_or_die, list(range(8)), group))
    assert sorted(results) == list(range(8))
    assert isinstance(results[3], WorkerCrash) and "worker process died" in results[3].message, results[3]
    assert all(results[i] == i * i for i in range(8) if i != 3), results


@needs_ray
@pytest.mark.parametrize("holds_model", [False, True], ids=["tasks", "actors"])
def test_crashed_items_are_retried_one_at_a_time(executor, holds_model, tmp_path):
    """Items whose workers died are retried with nothing else running, as the local pool retries them: a crash
    that came from running beside others (memory pressure) does not cost those rows."""
    from tunekit.prep.executors import TaskGroup

    items = [(str(tmp_path), x) for x in range(4)]
    results = dict(executor.imap_unordered(_crowded_dies, items, TaskGroup("tag", holds_model=holds_model)))
    assert results == {i: i * i for i in range(4)}, results


@needs_ray
def test_tasks_and_model_actors_see_their_threads_and_no_gpu(executor):
    """Tasks and actors run in other processes with capped threads and no visible GPU; a model stage's actors
    keep their module state (a loaded model) across all their calls and are gone when the stage ends."""
    from tunekit.prep.executors import TaskGroup

    seen = {"tasks": list(dict(executor.imap_unordered(_where, list(range(12)))).values())}
    seen["actors"] = list(dict(executor.imap_unordered(_where, list(range(12)), TaskGroup("tag", True))).values())
    for kind, results in seen.items():
        pids = {pid for pid, _, _ in results}
        assert os.getpid() not in pids and (kind == "tasks" or len(pids) <= 2), (kind, pids)  # two actors at most
        for _, _, env in results:
            assert env == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                           "CUDA_VISIBLE_DEVICES": ""}, (kind, env)  # fmt: skip
    served: dict[int, list[int]] = {}
    for pid, count, _ in seen["actors"]:
        served.setdefault(pid, []).append(count)
    # Each actor started fresh and served its items one after another in the same process: 1, 2, ... k.
    assert all(sorted(counts) == list(range(1, len(counts) + 1)) for counts in served.values()), served
    assert max(len(counts) for counts in served.values()) > 1, served
    deadline = time.monotonic() + 10
    actor_pids = {pid for pid, _, _ in seen["actors"]}
    while actor_pids and time.monotonic() < deadline:
        actor_pids = {pid for pid in actor_pids if _alive(pid)}
        time.sleep(0.1)
    assert not actor_pids, f"model actors still running after their stage: {actor_pids}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_ray
def test_a_node_that_does_not_see_the_shared_storage_stops_the_start(ray_address, tmp_path):
    """Each node checks the shared folders: a folder it lacks, or one without the driver's files, is a
    ConfigError naming the key and what to mount, before any work."""
    from tunekit.errors import ConfigErrors
    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.ray_executor import RayExecutor, SharedPath

    out = tmp_path / "out"
    out.mkdir()
    # /proc exists on every Linux node but takes no marker file; the corpus witness is not in it.
    corpus = SharedPath("corpus", "/proc", witness="/proc/tunekit-missing.wav")
    with pytest.raises(ConfigErrors) as err:
        RayExecutor(ExecutorConfig(name="ray"), shared=[SharedPath("out", str(out)), corpus]).start()
    (problem,) = err.value.problems
    assert "does not see corpus=/proc" in problem and "/proc/tunekit-missing.wav is missing" in problem, problem
    assert "mount the same shared storage" in problem and "at the same path" in problem, problem
    assert list(out.iterdir()) == []  # the check's marker file is removed (a passing check: the runs below)


@needs_ray
def test_a_model_stage_that_no_node_can_hold_stops_the_start(ray_address):
    from tunekit.errors import ConfigErrors
    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.ray_executor import RayExecutor

    cfg = ExecutorConfig(name="ray")
    cfg.stage_gpus.tokens = 1.0
    with pytest.raises(ConfigErrors) as err:
        RayExecutor(cfg, model_groups=["separate", "tokens"]).start()
    assert err.value.problems == [
        "stage tokens: each Ray actor would reserve 1 GPUs and 1 CPUs but the largest node has 0 GPUs and 2 CPUs; "
        "lower executor.stage_gpus.tokens or executor.model_cpus"
    ]


@needs_ray
def test_actors_that_cannot_start_fail_the_stage_instead_of_waiting_forever(ray_address):
    """Actors asking for what the cluster lacks would wait for ever; after executor.start_timeout_s without one
    running, the stage stops with the keys to change."""
    from tunekit.errors import ConfigError
    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.executors import TaskGroup
    from tunekit.prep.ray_executor import RayExecutor

    ex = RayExecutor(ExecutorConfig(name="ray", model_gpus=1.0, start_timeout_s=2.0))  # no model_groups: no check
    ex.start()
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        dict(ex.imap_unordered(abs, [1, 2, 3], TaskGroup("tokens", holds_model=True)))
    assert time.monotonic() - t0 < 30
    assert "no Ray actor of stage tokens started within executor.start_timeout_s=2 s" in str(err.value)
    assert "lower executor.model_gpus (or executor.stage_gpus.tokens)" in str(err.value)


# -- whole runs ----------------------------------------------------------------------------------------------


def _corpus(root: Path, n: int, seconds: float, seed: int) -> Path:
    from test_prep_helpers import music, sidecar, write

    for i in range(n):
        path = write(root / f"t{i:02d}.wav", music(seconds, 44100, seed=seed + i), 44100, "PCM_16")
        sidecar(path, "CC0-1.0" if i % 2 else "CC-BY-4.0")
    return root


def _musicgen(corpus: Path, out: Path, *overrides: str) -> Any:
    """pipelines/musicgen.yaml, every stage, on tiny models with 2 s windows; tags without CLAP, whose load in a
    fresh actor doubles the test's time (bench/bench_ray.py compares the outputs with CLAP)."""
    from tunekit.config.compose import load_config
    from tunekit.prep.config import PrepConfig

    return load_config(
        "prep",
        [f"corpus={corpus}", f"out={out}", "models=tiny", "workers=1", "quiet=true", "quality.min_seconds=3",
         "window.seconds=2", "window.min_seconds=1", "tag.clap=false", *overrides],
        PrepConfig,
    )  # fmt: skip


def _float_wav(path: Path) -> bool:
    import soundfile as sf

    return path.suffix == ".wav" and sf.info(str(path)).subtype == "FLOAT"


def _outputs(out: Path) -> dict[str, object]:
    """Every file of a prep output as compared between runs: bytes; float WAVs (their PEAK chunk carries a
    timestamp) by samples; cache entries by their result (they also hold timings). Logs and summary aside."""
    import soundfile as sf

    found: dict[str, object] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel in ("prep.log", "summary.json", ".lock") or rel.startswith(".cache/hashes/"):
            continue
        if rel.startswith(".cache/stages/"):
            entry = json.loads(path.read_text().replace(str(out), "<out>"))  # artifacts are named by absolute path
            found[rel] = (entry["update"], entry["rejection"])
        elif _float_wav(path):
            found[rel] = sf.read(str(path), dtype="float32", always_2d=True)[0].tobytes()
        else:
            found[rel] = path.read_bytes()
    return found


@needs_ray
@pytest.mark.integration
def test_every_musicgen_stage_on_ray_gives_the_local_outputs(ray_address, tmp_path, one_torch_thread):
    from threadpoolctl import threadpool_limits

    from tunekit.prep.run import run_prep

    corpus = _corpus(tmp_path / "corpus", 2, 4.0, seed=500)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    with threadpool_limits(limits=1):  # one BLAS thread, as in every prep worker
        assert run_prep(_musicgen(corpus, local)) == 0
    # One actor per model stage: on two cores, two actors only load the model twice (the executor tests cover
    # actor pools).
    assert run_prep(_musicgen(corpus, on_ray, "executor=ray", "executor.model_actors=1")) == 0
    summary = json.loads((on_ray / "summary.json").read_text())
    assert summary["config"]["executor"]["name"] == "ray"
    for name in ("separate", "tag", "caption", "tokens"):
        stats = summary["stages"][name]
        assert stats["computed"] == stats["rows"] > 0 and stats["failed"] == 0, (name, stats)
    expected, got = _outputs(local), _outputs(on_ray)
    assert sorted(got) == sorted(expected)
    assert any(k.startswith("tokens/") for k in got) and any(k.startswith("audio/") for k in got), sorted(got)
    assert any(k.startswith(".cache/artifacts/separate/") for k in got), sorted(got)
    different = {k: (expected[k], got[k]) for k in expected if got[k] != expected[k]}
    assert not different, f"{len(different)} of {len(expected)} outputs differ from the local run: {different}"


@needs_ray
@pytest.mark.integration
def test_the_acestep_pipeline_on_ray_gives_the_local_outputs(ray_address, tmp_path, one_torch_thread):
    """pipelines/acestep.yaml on tiny models: the latents stage (VAE latents, conditions, the model file) runs on
    a Ray actor and writes the files the local run writes, byte for byte."""
    from test_prep_latents import acestep_config
    from threadpoolctl import threadpool_limits

    from tunekit.prep.run import run_prep

    corpus = _corpus(tmp_path / "corpus", 2, 6.0, seed=700)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    with threadpool_limits(limits=1):
        assert run_prep(acestep_config(corpus, local)) == 0
    assert run_prep(acestep_config(corpus, on_ray, "executor=ray", "executor.model_actors=1")) == 0
    stats = json.loads((on_ray / "summary.json").read_text())["stages"]["latents"]
    assert stats["computed"] == stats["rows"] > 0 and stats["failed"] == 0, stats
    expected, got = _outputs(local), _outputs(on_ray)
    assert sorted(got) == sorted(expected)
    assert sum(k.startswith("latents/") for k in got) == 3, sorted(got)  # two tracks and the model file
    different = sorted(k for k in expected if got[k] != expected[k])
    assert not different, f"{len(different)} of {len(expected)} outputs differ from the local run: {different}"


def decode_or_die(row, section, ctx):
    """The decode stage, except that it kills its worker process on one file (a decoder crash)."""
    from tunekit.prep.decode import decode_track

    if Path(row.source_path).name == CRASH_ON:
        os._exit(1)
    return decode_track(row, section, ctx)


@needs_ray
@pytest.mark.integration
def test_a_stage_that_kills_its_worker_fails_that_row_and_the_run_goes_on(ray_address, tmp_path, monkeypatch):
    import dataclasses

    from test_prep_helpers import prep_config, read_table

    from tunekit.prep.config import ExecutorConfig
    from tunekit.prep.registry import STAGES
    from tunekit.prep.run import run_prep

    corpus = _corpus(tmp_path / "corpus", 4, 3.0, seed=600)
    monkeypatch.setitem(STAGES, "decode", dataclasses.replace(STAGES["decode"], fn="test_prep_ray:decode_or_die"))
    cfg = prep_config(corpus, tmp_path / "out", quality__min_seconds=2.0, window__seconds=2.0,
                      window__min_seconds=1.0)  # fmt: skip
    cfg.executor = ExecutorConfig(name="ray")
    assert run_prep(cfg) == 0
    tracks = {Path(t["source_path"]).name: t for t in read_table(tmp_path / "out" / "tracks.parquet")}
    crashed = tracks.pop(CRASH_ON)
    assert (crashed["status"], crashed["reason"], crashed["failed_stage"]) == ("failed", "error:WorkerCrash", "decode")
    assert "worker process died" in crashed["reason_detail"], crashed["reason_detail"]
    assert {t["status"] for t in tracks.values()} == {"ok"}, tracks
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stages"]["decode"]["failed"] == 1 and summary["stages"]["decode"]["computed"] == 4


DRIVER = """
import sys
from tunekit.prep.config import CORE_STAGES, ExecutorConfig, PrepConfig
from tunekit.prep.run import run_prep

if __name__ == "__main__":
    executor = ExecutorConfig(name="ray", address=sys.argv[3])
    sys.exit(run_prep(PrepConfig(corpus=sys.argv[1], out=sys.argv[2], quiet=True, stages=CORE_STAGES,
                                 executor=executor)))
"""


@needs_ray
@pytest.mark.integration
def test_kill_9_of_a_ray_driver_then_a_local_rerun_resumes(ray_address, tmp_path):
    """A driver joined to the cluster (executor.address) is killed mid-run; re-run with the local executor,
    the run resumes from what the Ray workers cached and ends with the uninterrupted local run's outputs."""
    from test_prep_helpers import kill_once_cached, prep_config
    from threadpoolctl import threadpool_limits

    from tunekit.prep.run import run_prep

    corpus = _corpus(tmp_path / "corpus", 6, 12.0, seed=700)
    reference, out = tmp_path / "reference", tmp_path / "killed"
    with threadpool_limits(limits=1):
        run_prep(prep_config(corpus, reference))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done_before = kill_once_cached([sys.executable, str(driver), str(corpus), str(out), ray_address], out,
                                   "loudness", 120)
    assert 1 <= done_before < 6, done_before
    with threadpool_limits(limits=1):
        assert run_prep(prep_config(corpus, out)) == 0
    stats = json.loads((out / "summary.json").read_text())["stages"]
    assert stats["decode"]["cached"] == 6 and stats["loudness"]["cached"] >= done_before, stats
    assert stats["loudness"]["computed"] == 6 - stats["loudness"]["cached"]
    assert _outputs(out) == _outputs(reference)
    assert not list(out.rglob(".*.tmp*"))  # nothing half-written left behind

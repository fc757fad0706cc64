"""Model loaders and the tiny-model kit: every tiny model builds in the real layout, loads through the
same loader as the real checkpoint, runs, and is deterministic; real ids offline fail clearly."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _numerics import EPS32, assert_close, reorder_rtol

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tunekit.errors import ConfigError  # noqa: E402
from tunekit.models import registry, tiny  # noqa: E402
from tunekit.models.config import ModelsConfig  # noqa: E402
from tunekit.models.digest import model_digest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tunekit cache for the whole session (TUNEKIT_CACHE), so each tiny model builds once."""
    cache = tmp_path_factory.mktemp("tunekit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNEKIT_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield cache


@pytest.fixture()
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, with an empty Hugging Face cache: nothing real can be found."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _fake_hub_cache(cache: Path, repo_id: str, files: list[Path]) -> Path:
    """Lay `files` out as a Hugging Face cache snapshot of `repo_id` (blobs named by their sha256)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    for f in files:
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copy(f, repo / "blobs" / digest)
        (snapshot / f.name).symlink_to(Path("../../blobs") / digest)
    return snapshot


# --- registry and resolve -------------------------------------------------------------------------


def test_registry_is_consistent_with_the_tiny_builders() -> None:
    ids = [s.id for s in registry.MODELS]
    assert len(ids) == len(set(i.lower() for i in ids)), "duplicate ids"
    for family, default in registry.DEFAULTS.items():
        spec = registry.find_spec(default)
        assert spec is not None and spec.loader.startswith(family), default
    for spec in registry.MODELS:
        assert spec.tiny_name in tiny.TINY_NAMES, spec
        assert spec.role in {"generator", "codec", "separator", "embedding"} and spec.description
    assert set(tiny.TINY_NAMES) == {s.tiny_name for s in registry.MODELS if s.tiny_name}


def test_resolve_passes_real_ids_and_local_paths_through(tmp_path: Path) -> None:
    assert registry.resolve("facebook/musicgen-small", tiny=False) == "facebook/musicgen-small"
    assert registry.resolve("htdemucs", tiny=False) == "htdemucs"
    local = tmp_path / "my-musicgen"
    local.mkdir()
    assert registry.resolve(str(local), tiny=True) == str(local)  # a local checkpoint is used as given


@pytest.mark.parametrize(
    ("real_id", "tiny_name"),
    [
        ("facebook/musicgen-small", "musicgen"),
        ("facebook/musicgen-large", "musicgen"),
        ("facebook/musicgen-melody", "musicgen-melody"),
        ("facebook/musicgen-stereo-medium", "musicgen-stereo"),
        ("facebook/musicgen-stereo-melody-large", "musicgen-stereo-melody"),
        ("facebook/encodec_32khz", "encodec_32khz"),
        ("htdemucs", "htdemucs"),
        ("htdemucs_ft", "htdemucs_ft"),
        ("mdx_extra", "mdx_extra"),
        ("laion/larger_clap_music", "clap"),
        ("LAION/Larger_CLAP_Music", "clap"),
    ],
)
def test_resolve_maps_each_variant_to_its_tiny_model(real_id: str, tiny_name: str, tiny_cache: Path) -> None:
    path = Path(registry.resolve(real_id, tiny=True))
    assert path == tiny_cache / "tiny" / tiny_name
    assert _json(path / tiny.MANIFEST) == {"name": tiny_name, "version": tiny.TINY_VERSION, "random_weights": True}


def test_resolve_rejects_ids_without_a_tiny_model() -> None:
    with pytest.raises(ConfigError, match="models.tiny") as err:
        registry.resolve("someone/musicgen-finetune", tiny=True)
    assert err.value.key == "models.tiny"


def test_models_config_files_match_the_schema() -> None:
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(ModelsConfig)
    for name, expected in (("default", False), ("tiny", True)):
        text = (REPO / "configs" / "models" / f"{name}.yaml").read_text()
        assert text.startswith("# Config group `models`")
        cfg = OmegaConf.merge(schema, OmegaConf.create(text))
        assert cfg.tiny is expected and cfg.cache_dir is None


def test_loader_modules_import_nothing_heavy() -> None:
    code = (
        "import sys; import tunekit.models.registry, tunekit.models.musicgen, tunekit.models.encodec, "
        "tunekit.models.demucs, tunekit.models.clap, tunekit.models.digest, tunekit.models.tiny; "
        "heavy = [m for m in ('torch', 'transformers', 'demucs', 'huggingface_hub') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- MusicGen -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real_id", "channels"), [("facebook/musicgen-small", 1), ("facebook/musicgen-stereo-small", 2)]
)
def test_tiny_musicgen_loads_trains_and_generates(real_id: str, channels: int) -> None:
    import torch
    from transformers import EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor, T5Tokenizer

    from tunekit.models.musicgen import load_musicgen

    path = Path(registry.resolve(real_id, tiny=True))
    files = {p.name for p in path.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= files
    config = _json(path / "config.json")
    assert config["model_type"] == "musicgen"
    assert config["decoder"]["num_codebooks"] == 4 * channels and config["decoder"]["audio_channels"] == channels
    assert config["decoder"]["vocab_size"] == config["audio_encoder"]["codebook_size"] == 2048
    assert config["decoder"]["decoder_start_token_id"] == config["decoder"]["pad_token_id"] == 2048

    model, processor = load_musicgen(real_id, tiny=True)
    assert type(model) is MusicgenForConditionalGeneration and not model.training
    assert type(processor) is MusicgenProcessor
    assert isinstance(processor.tokenizer, T5Tokenizer)
    assert isinstance(processor.feature_extractor, EncodecFeatureExtractor)
    assert processor.feature_extractor.sampling_rate == model.config.audio_encoder.sampling_rate == 32_000

    inputs = processor(text=["calm lofi piano at 80 bpm", "fast rock drums"], padding=True, return_tensors="pt")
    frames = 12
    labels = torch.randint(0, 2048, (2, frames, 4 * channels), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss = model(**inputs, labels=labels).loss
    # Untrained logits are near uniform over 2048 codes: cross-entropy close to ln(2048) = 7.62.
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(2048)) < 0.2

    torch.manual_seed(0)
    with torch.no_grad():
        audio = model.generate(**inputs, max_new_tokens=10)
    # 11 decoder steps (start token + 10) minus the 4-step delay pattern = 7 frames of 640 samples.
    assert tuple(audio.shape) == (2, channels, 7 * 640)
    assert torch.isfinite(audio).all()


def test_tiny_musicgens_share_the_tiny_codec_and_text_encoder() -> None:
    import torch

    from tunekit.models.encodec import load_encodec
    from tunekit.models.musicgen import load_musicgen

    codec, _ = load_encodec("facebook/encodec_32khz", tiny=True)
    mono, _ = load_musicgen("facebook/musicgen-small", tiny=True)
    stereo, _ = load_musicgen("facebook/musicgen-stereo-small", tiny=True)
    reference = codec.state_dict()
    for model in (mono, stereo):
        state = model.audio_encoder.state_dict()
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    assert all(torch.equal(a, b) for a, b in zip(mono.text_encoder.state_dict().values(),
                                                 stereo.text_encoder.state_dict().values(), strict=True))
    assert not torch.equal(mono.decoder.lm_heads[0].weight, stereo.decoder.lm_heads[0].weight)


@pytest.mark.parametrize(
    ("real_id", "channels"), [("facebook/musicgen-melody", 1), ("facebook/musicgen-stereo-melody", 2)]
)
def test_tiny_musicgen_melody(real_id: str, channels: int) -> None:
    import importlib.util

    import torch
    from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration

    from tunekit.models.musicgen import load_musicgen

    path = Path(registry.resolve(real_id, tiny=True))
    assert _json(path / "config.json")["model_type"] == "musicgen_melody"
    extractor = _json(path / "preprocessor_config.json")
    assert extractor["feature_extractor_type"] == "MusicgenMelodyFeatureExtractor"
    assert extractor["processor_class"] == "MusicgenMelodyProcessor"

    if importlib.util.find_spec("torchaudio") is None:
        # transformers computes the chroma features with torchaudio; without it the loader returns the
        # text tokenizer (tunekit computes the melody chroma itself).
        model, tokenizer = load_musicgen(real_id, tiny=True)
        assert isinstance(tokenizer, type(AutoTokenizer.from_pretrained(path)))
    else:
        model, processor = load_musicgen(real_id, tiny=True)
        assert type(processor).__name__ == "MusicgenMelodyProcessor"
        tokenizer = processor.tokenizer
    assert type(model) is MusicgenMelodyForConditionalGeneration

    inputs = tokenizer(["dreamy synth melody"], return_tensors="pt")
    chroma = torch.zeros(1, 30, 12)
    chroma[:, :, 4] = 1.0  # one-hot chroma, as the feature extractor produces
    labels = torch.randint(0, 2048, (1, 12, 4 * channels), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = model(**inputs, input_features=chroma, labels=labels).loss
        audio = model.generate(**inputs, max_new_tokens=10)
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(2048)) < 0.2
    assert tuple(audio.shape) == (1, channels, 7 * 640)


# --- EnCodec --------------------------------------------------------------------------------------


def test_tiny_encodec_round_trip() -> None:
    import torch
    from transformers import EncodecFeatureExtractor, EncodecModel

    from tunekit.models.encodec import load_encodec

    path = Path(registry.resolve("facebook/encodec_32khz", tiny=True))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in path.iterdir()}
    model, extractor = load_encodec("facebook/encodec_32khz", tiny=True)
    assert type(model) is EncodecModel and isinstance(extractor, EncodecFeatureExtractor)
    assert extractor.sampling_rate == model.config.sampling_rate == 32_000
    assert model.config.frame_rate == 50 and model.config.num_quantizers == 4

    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(32_000)).astype(np.float32)
    inputs = extractor(raw_audio=audio, sampling_rate=32_000, return_tensors="pt")
    with torch.no_grad():
        encoded = model.encode(inputs["input_values"], inputs["padding_mask"])
        codes = encoded.audio_codes
        decoded = model.decode(codes, encoded.audio_scales, inputs["padding_mask"]).audio_values
    assert tuple(codes.shape) == (1, 1, 4, 50)  # 1 s at 50 Hz, 4 codebooks
    assert 0 <= int(codes.min()) and int(codes.max()) < 2048
    assert tuple(decoded.shape) == (1, 1, 32_000)


# --- Demucs ---------------------------------------------------------------------------------------


def test_tiny_htdemucs_layout_and_separation() -> None:
    import torch
    import yaml
    from demucs.apply import BagOfModels, apply_model
    from demucs.htdemucs import HTDemucs
    from safetensors import safe_open

    from tunekit.models.demucs import load_demucs

    path = Path(registry.resolve("htdemucs", tiny=True))
    bag = yaml.safe_load((path / "htdemucs.yaml").read_text())
    assert len(bag["models"]) == 1 and len(bag["models"][0]) == 8
    with safe_open(str(path / f"{bag['models'][0]}.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["klass"] == "demucs.htdemucs.HTDemucs"
    assert json.loads(metadata["kwargs"])["segment"] == {"_type": "fraction", "numerator": 39, "denominator": 5}

    model = load_demucs("htdemucs", tiny=True)
    assert isinstance(model, BagOfModels) and isinstance(model.models[0], HTDemucs)
    assert model.sources == ["drums", "bass", "other", "vocals"]
    assert model.samplerate == 44_100 and model.audio_channels == 2

    mix = 0.1 * torch.randn(2, 44_100 * 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        stems = apply_model(model, mix[None], shifts=0, split=True, overlap=0.25, progress=False)
    assert tuple(stems.shape) == (1, 4, 2, 44_100 * 2)
    assert torch.isfinite(stems).all()


def test_demucs_own_hub_loader_reads_the_tiny_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """demucs.pretrained.get_model, served our folder as if it were the Hub repo, builds the same model."""
    import huggingface_hub
    import torch
    from demucs.pretrained import get_model

    from tunekit.models.demucs import load_demucs

    folder = Path(registry.resolve("htdemucs_ft", tiny=True))
    requested = []

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        requested.append((repo_id, filename))
        return str(folder / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    theirs = get_model("htdemucs_ft")
    ours = load_demucs("htdemucs_ft", tiny=True)
    assert requested[0] == ("adefossez/HTDemucs-ft", "htdemucs_ft.yaml") and len(requested) == 5
    assert theirs.weights == ours.weights == [[float(i == j) for j in range(4)] for i in range(4)]
    for a, b in zip(theirs.models, ours.models, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("name", "klass", "count", "sources", "segment"),
    [("htdemucs_6s", "HTDemucs", 1, 6, 7.8), ("hdemucs_mmi", "HDemucs", 1, 4, 44), ("mdx_extra", "HDemucs", 4, 4, 44)],
)
def test_tiny_demucs_bag_shapes(name: str, klass: str, count: int, sources: int, segment: float) -> None:
    from tunekit.models.demucs import load_demucs

    model = load_demucs(name, tiny=True)
    assert [type(m).__name__ for m in model.models] == [klass] * count
    assert len(model.sources) == sources
    assert all(float(m.segment) == segment for m in model.models)


def test_demucs_legacy_th_is_loaded_without_unpickling_code(tmp_path: Path) -> None:
    import torch
    from demucs.states import save_with_checksum, serialize_model
    from omegaconf import OmegaConf

    from tunekit.models.demucs import load_demucs

    tiny_model = load_demucs("htdemucs", tiny=True).models[0]
    save_with_checksum(serialize_model(tiny_model, OmegaConf.create({"seed": 1}), half=False), tmp_path / "abcd1234.th")
    (tmp_path / "mybag.yaml").write_text("models: ['abcd1234']\n")
    loaded = load_demucs("mybag", repo=tmp_path)
    assert all(torch.equal(x, y) for x, y in zip(loaded.models[0].state_dict().values(),
                                                 tiny_model.state_dict().values(), strict=True))

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    torch.save({"klass": Evil()}, tmp_path / "evil.th")
    with pytest.raises(ConfigError, match="refusing to load"):
        load_demucs("evil", repo=tmp_path)
    assert not marker.exists()
    with pytest.raises(ConfigError, match="available: abcd1234, evil, mybag"):
        load_demucs("nothing", repo=tmp_path)


# --- CLAP -----------------------------------------------------------------------------------------


def test_tiny_clap_embeds_audio_and_text() -> None:
    import torch
    from transformers import ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    from tunekit.models.clap import load_clap

    path = Path(registry.resolve("laion/larger_clap_music", tiny=True))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in path.iterdir()}
    model, processor = load_clap(tiny=True)
    assert type(model) is ClapModel and type(processor) is ClapProcessor
    assert isinstance(processor.feature_extractor, ClapFeatureExtractor)
    assert isinstance(processor.tokenizer, RobertaTokenizer)
    assert processor.feature_extractor.sampling_rate == 48_000

    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(48_000 * 3)).astype(np.float32) for _ in range(2)]
    audio_inputs = processor(audio=clips, sampling_rate=48_000, return_tensors="pt")
    text_inputs = processor(text=["calm lofi piano", "loud rock guitar"], padding=True, return_tensors="pt")
    with torch.no_grad():
        audio_emb = model.get_audio_features(**audio_inputs).pooler_output
        text_emb = model.get_text_features(**text_inputs).pooler_output
    assert tuple(audio_emb.shape) == tuple(text_emb.shape) == (2, model.config.projection_dim)
    # L2-normalised: norm 1 up to two float32 sums of d squares (the model's, then ours, γ(d−1) each) and a
    # few single roundings (square roots, the division).
    tol = reorder_rtol(model.config.projection_dim) + 4 * EPS32
    assert_close(audio_emb.norm(dim=-1), torch.ones(2), atol=tol, what="audio embedding norms")
    assert_close(text_emb.norm(dim=-1), torch.ones(2), atol=tol, what="text embedding norms")


# --- determinism, caching, concurrency, digests ---------------------------------------------------


def test_tiny_builds_are_deterministic_and_leave_the_caller_rng_alone(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name in tiny.TINY_NAMES:
        first = registry.resolve(next(s.id for s in registry.MODELS if s.tiny_name == name), tiny=True)
        second = tiny.ensure_tiny(name, cache_dir=tmp_path)
        assert model_digest(first) == model_digest(second), name
    assert torch.equal(torch.rand(3), expected)


def test_second_resolve_loads_without_rebuilding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny.ensure_tiny("encodec_32khz", cache_dir=tmp_path)
    monkeypatch.setattr(tiny, "builder", lambda name: pytest.fail("rebuilt a cached tiny model"))
    assert tiny.ensure_tiny("encodec_32khz", cache_dir=tmp_path) == first
    # A model of an older kit version is replaced.
    (first / tiny.MANIFEST).write_text(json.dumps({"name": "encodec_32khz", "version": 0}))
    monkeypatch.undo()
    assert tiny.ensure_tiny("encodec_32khz", cache_dir=tmp_path) == first
    assert _json(first / tiny.MANIFEST)["version"] == tiny.TINY_VERSION
    assert [p.name for p in tmp_path.joinpath("tiny").iterdir() if not p.name.endswith(".lock")] == ["encodec_32khz"]


def test_concurrent_builders_leave_one_complete_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two builders racing past the lock: one rename wins, the loser keeps the winner's copy."""
    import contextlib

    barrier = threading.Barrier(2)

    def racing_builder(name: str):
        def build(out: Path) -> None:
            (out / "config.json").write_text("{}")
            barrier.wait(timeout=10)  # both temp folders are complete before either renames

        return build

    monkeypatch.setattr(tiny, "builder", racing_builder)
    monkeypatch.setattr(tiny, "_build_lock", lambda lock_file: contextlib.nullcontext())
    results: list[Path] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(tiny.ensure_tiny("clap", cache_dir=tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [tmp_path / "tiny" / "clap"] * 2
    assert sorted(p.name for p in (tmp_path / "tiny" / "clap").iterdir()) == ["config.json", tiny.MANIFEST]
    assert [p.name for p in (tmp_path / "tiny").iterdir() if p.name.endswith(".tmp")] == []


def test_two_processes_building_at_once_build_once(tmp_path: Path) -> None:
    """Across processes the build is serialised (flock): one builds, the other waits and loads it."""
    code = (
        "import os, sys, time\n"
        "from tunekit.models import tiny\n"
        "def build(out):\n"
        "    with open(sys.argv[2], 'a') as log: log.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(0.5)\n"
        "    (out / 'config.json').write_text('{}')\n"
        "tiny.builder = lambda name: build\n"
        "print(tiny.ensure_tiny('clap', cache_dir=sys.argv[1]))\n"
    )
    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(log)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(tmp_path / "tiny" / "clap")] * 2
    assert len(log.read_text().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "tiny" / "clap").iterdir()) == ["config.json", tiny.MANIFEST]


def test_model_digest_tracks_content_not_location(tmp_path: Path) -> None:
    source = Path(registry.resolve("facebook/encodec_32khz", tiny=True))
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    (copy / "README.md").write_text("notes do not change the model\n")
    assert model_digest(copy) == model_digest(source)
    config = _json(copy / "config.json")
    config["num_filters"] = 8
    (copy / "config.json").write_text(json.dumps(config))
    assert model_digest(copy) != model_digest(source)

    # A Hugging Face cache snapshot links to blobs named by their sha256: same digest as a plain copy.
    snapshot = _fake_hub_cache(tmp_path / "hub", "facebook/encodec_32khz", sorted(source.iterdir()))
    assert model_digest(snapshot) == model_digest(source)


# --- real ids offline ------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_hub")
@pytest.mark.parametrize(
    ("loader", "model_id", "repo"),
    [
        ("tunekit.models.musicgen:load_musicgen", "facebook/musicgen-small", "facebook/musicgen-small"),
        ("tunekit.models.encodec:load_encodec", "facebook/encodec_32khz", "facebook/encodec_32khz"),
        ("tunekit.models.clap:load_clap", "laion/larger_clap_music", "laion/larger_clap_music"),
        ("tunekit.models.demucs:load_demucs", "htdemucs", "adefossez/HTDemucs"),
        ("tunekit.models.digest:model_digest", "facebook/musicgen-small", "facebook/musicgen-small"),
    ],
)
def test_real_id_offline_gives_a_clear_error(loader: str, model_id: str, repo: str) -> None:
    from importlib import import_module

    from tunekit.models.hub import WeightsNotFoundError

    module, function = loader.split(":")
    with pytest.raises(WeightsNotFoundError) as err:
        getattr(import_module(module), function)(model_id)
    message = str(err.value)
    assert f"weights for model {model_id!r} could not be found: offline" in message
    assert f"hf download {repo}" in message and "local folder" in message and "models=tiny" in message


def test_missing_local_folder_names_the_folder(tmp_path: Path) -> None:
    from tunekit.models.musicgen import load_musicgen

    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="does not exist"):
        load_musicgen(str(missing))


def test_loader_rejects_a_checkpoint_of_another_family() -> None:
    from tunekit.models.encodec import load_encodec

    with pytest.raises(ConfigError, match="is a musicgen checkpoint, not EnCodec"):
        load_encodec(registry.resolve("facebook/musicgen-small", tiny=True))


def test_real_ids_load_from_the_hugging_face_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without models=tiny an id goes to the libraries' own Hub loaders, which read the local cache offline."""
    import torch
    from huggingface_hub import constants

    from tunekit.models.demucs import load_demucs
    from tunekit.models.encodec import load_encodec

    codec_dir = Path(registry.resolve("facebook/encodec_32khz", tiny=True))
    demucs_dir = Path(registry.resolve("htdemucs", tiny=True))
    hub = tmp_path / "hub"
    _fake_hub_cache(hub, "facebook/encodec_32khz", [p for p in codec_dir.iterdir() if p.name != tiny.MANIFEST])
    demucs_files = sorted(p for p in demucs_dir.iterdir() if p.name != tiny.MANIFEST)
    _fake_hub_cache(hub, "adefossez/HTDemucs", demucs_files)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))

    model, extractor = load_encodec("facebook/encodec_32khz")
    reference, _ = load_encodec("facebook/encodec_32khz", tiny=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))
    separator = load_demucs("htdemucs")
    assert type(separator.models[0]).__name__ == "HTDemucs"

    # Fingerprints of hub ids cover the cached snapshot's files, as for the same files in a plain folder.
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in demucs_files:
        shutil.copy(f, plain / f.name)
    assert model_digest("htdemucs") == model_digest(plain)
    codec_plain = tmp_path / "codec"
    shutil.copytree(codec_dir, codec_plain)
    (codec_plain / tiny.MANIFEST).unlink()
    assert model_digest("facebook/encodec_32khz") == model_digest(codec_plain)


def test_musicgen_special_token_false_alarm_is_dropped_and_real_problems_still_warn() -> None:
    """transformers flags MusicGen's pad/bos id (= codebook size, by design) on every load; tunekit drops
    exactly that warning once a MusicGen model is loaded, and lets other out-of-range ids through."""
    import logging

    from tunekit.models.musicgen import load_musicgen

    load_musicgen("facebook/musicgen-small", tiny=True)
    config_logger = logging.getLogger("transformers.configuration_utils")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    config_logger.addHandler(handler)
    try:
        template = ("Model config: pad_token_id must be `None` or an integer within the vocabulary "
                    "(between 0 and 2047), got {}. This may result in unexpected behavior.")
        config_logger.warning(template.format(2048))
        config_logger.warning(template.format(-1))
        config_logger.warning(template.format(5000))
    finally:
        config_logger.removeHandler(handler)
    assert seen == [template.format(-1), template.format(5000)]

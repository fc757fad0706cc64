"""ACE-Step prep (`pipeline=acestep`, stage `latents`): the output contract, latents and conditioning equal to the
model library's own encoders, the stage cache, and lyrics from sidecars and metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from _numerics import assert_close, norm_ratio, reorder_rtol
from test_prep_helpers import music, read_table, sidecar, write

from tunekit.models import acestep
from tunekit.models.registry import DEFAULTS, MODELS
from tunekit.prep import latents as lat
from tunekit.prep.lyrics import INSTRUMENTAL, Lyrics, LyricsError, parse_lyrics, track_lyrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 48_000
TURBO = DEFAULTS["acestep"]
BASE = next(spec.id for spec in MODELS if spec.tiny_name == "acestep-base")
LRC = "[ar:Test Artist]\n[ti:Song]\n[verse]\n[00:00.50]first line\n[00:05.20]second line\n[00:09.00]third line\n"
# The conditioning chain as in test_acestep_models: Qwen3 (2 layers of width 32, MLP 64), the text projector, the
# lyric and timbre encoders (2 layers of width 64, MLP 128, attention over up to 750 tokens).
CONDITION_SUMS = (*(32, 32, 140, 32, 64) * 2, 32, *(64, 64, 750, 64, 128) * 4)
# source path -> (seconds, lyrics of each kept window as given to the encoder, lyrics_source, language)
TRACKS = {
    "vocal/lrc_song.wav": (12.0, ["[verse]\nfirst line", "second line\nthird line", INSTRUMENTAL], "sidecar_lrc", "en"),
    "vocal/txt_song.wav": (10.5, ["hello there\nsecond verse"] * 2, "sidecar_txt", None),
    "meta/column.wav": (6.0, ["la la la\nlo lo"], "metadata", "ja"),
    "meta/file.wav": (6.0, ["words from a file"], "metadata", None),
    "inst/pad.wav": (6.0, [INSTRUMENTAL], "instrumental", None),
    "none/plain.wav": (6.0, [INSTRUMENTAL], None, None),
}
ESCAPE = "bad/escape.wav"


def build_corpus(root: Path) -> None:
    for i, (path, (seconds, *_)) in enumerate({**TRACKS, ESCAPE: (6.0,)}.items()):
        write(root / path, music(seconds, RATE, seed=300 + i), RATE, "PCM_16")
    sidecar(root / "vocal/lrc_song.wav", "CC0-1.0", language="EN", time_signature="3/4")
    (root / "vocal/lrc_song.lrc").write_text(LRC, encoding="utf-8")
    sidecar(root / "vocal/txt_song.wav", "CC0-1.0")
    (root / "vocal/txt_song.txt").write_text("\ufeffhello there\nsecond verse\n", encoding="utf-8")
    sidecar(root / "inst/pad.wav", "CC0-1.0", instrumental=True)
    sidecar(root / "none/plain.wav", "CC0-1.0")
    (root / "texts").mkdir()
    (root / "texts/file.txt").write_text("words from a file\n", encoding="utf-8")
    (root.parent / "outside.txt").write_text("secret\n", encoding="utf-8")
    (root / "metadata.csv").write_text(
        "path,license,lyrics,lang,lyrics_file\n"
        'meta/column.wav,CC0-1.0,"la la la\nlo lo",JA,\n'
        "meta/file.wav,CC0-1.0,,,texts/file.txt\n"
        "bad/escape.wav,CC0-1.0,,,../outside.txt\n",
        encoding="utf-8",
    )


def acestep_config(corpus: Path, out: Path, *overrides: str):
    """pipelines/acestep.yaml with tiny models, 5 s windows and the model-free tag stage (no CLAP): fast."""
    from tunekit.config.compose import load_config
    from tunekit.prep.config import PrepConfig

    return load_config(
        "prep",
        [f"corpus={corpus}", f"out={out}", "pipeline=acestep", "models=tiny", "workers=1", "quiet=true",
         "quality.min_seconds=5", "window.seconds=5", "window.min_seconds=2", "tag.clap=false",
         "latents.device=cpu", "latents.threads=1", *overrides],
        PrepConfig,
    )  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    from tunekit.prep.run import run_prep

    base = tmp_path_factory.mktemp("acestep_prep")
    corpus, out = base / "corpus", base / "out"
    build_corpus(corpus)
    assert run_prep(acestep_config(corpus, out)) == 0
    pipe = acestep.load_acestep(TURBO, tiny=True)
    tracks = {t["source_path"]: t for t in read_table(out / "tracks.parquet")}
    windows = read_table(out / "windows.parquet")
    by_track: dict[str, list[dict]] = {}
    for w in windows:
        by_track.setdefault(w["track_id"], []).append(w)
    summary = json.loads((out / "summary.json").read_text())
    return SimpleNamespace(corpus=corpus, out=out, pipe=pipe, tracks=tracks, windows=windows, by_track=by_track,
                           summary=summary)  # fmt: skip


def _load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


# -- the contract --------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_prep_writes_the_contract(prepared: SimpleNamespace) -> None:
    out, pipe, summary = prepared.out, prepared.pipe, prepared.summary
    digest = summary["models"]["latents"]["digest"]
    assert summary["pipeline"] == "acestep" and summary["status"] == "ok"
    assert summary["models"]["latents"] == {"model": TURBO, "variant": "turbo", "digest": digest}
    assert len(digest) == 64 and summary["config"]["latents"]["model"] == TURBO
    channels = pipe.vae.config.decoder_input_channels  # 8 for the tiny VAE (64 real)
    hidden = pipe.condition_encoder.config.hidden_size  # 64 tiny (2048 real)

    tensors, meta = _load(out / "latents" / digest[:12] / "model.safetensors")
    assert set(tensors) == {"null_condition", "silence_latent"}
    assert meta == {"model": TURBO, "digest": digest, "variant": "turbo", "sample_rate": "48000",
                    "latent_rate": "25", "channels": str(channels), "hidden": str(hidden)}  # fmt: skip
    assert torch.equal(tensors["null_condition"], acestep.null_condition(pipe))
    assert tuple(tensors["null_condition"].shape) == (1, 1, hidden)
    assert torch.equal(tensors["silence_latent"], pipe.condition_encoder.silence_latent.float())
    assert tuple(tensors["silence_latent"].shape) == (1, 15_000, channels)

    kept = {p: t for p, t in prepared.tracks.items() if t["status"] == "ok"}
    assert sorted(kept) == sorted(TRACKS)
    for path, (_, lyrics, source, language) in TRACKS.items():
        track = kept[path]
        windows = prepared.by_track[track["track_id"]]
        assert [w["lyrics"] for w in windows] == lyrics, path
        assert {w["language"] for w in windows} == {language}, path
        assert (track["lyrics_source"], track["language"], track["n_windows"]) == (source, language, len(lyrics))
        rel = f"latents/{digest[:12]}/{track['track_id']}.safetensors"
        tensors, meta = _load(out / rel)
        assert meta == {"model": TURBO, "digest": digest, "variant": "turbo"}, path
        assert set(tensors) == {f"{w['window_id']}/{part}" for w in windows for part in ("mean", "std", "cond")}
        for w in windows:
            mean, std, cond = (tensors[f"{w['window_id']}/{part}"] for part in ("mean", "std", "cond"))
            frames = w["frames"] // 1920  # 25 latents per second
            assert w["latents_file"] == rel and w["latent_frames"] == frames, w["window_id"]
            assert mean.shape == std.shape == (frames, channels) and mean.dtype == std.dtype == torch.float32
            assert float(std.min()) > 0
            assert cond.dtype == torch.float32 and cond.shape == (w["cond_length"], hidden), w["window_id"]
    assert kept["vocal/lrc_song.wav"]["lyrics"] == "[verse]\nfirst line\nsecond line\nthird line"
    assert kept["inst/pad.wav"]["lyrics"] == kept["none/plain.wav"]["lyrics"] == INSTRUMENTAL
    assert [w["latent_frames"] for w in prepared.by_track[kept["vocal/lrc_song.wav"]["track_id"]]] == [125, 125, 50]


@pytest.mark.integration
def test_a_lyrics_path_leaving_the_corpus_is_rejected_with_a_reason(prepared: SimpleNamespace) -> None:
    row = prepared.tracks[ESCAPE]
    assert (row["status"], row["reason"], row["failed_stage"]) == ("rejected", "lyrics_unusable", "latents")
    assert "'../outside.txt' leaves the corpus root" in row["reason_detail"]
    assert row["track_id"] not in prepared.by_track
    assert prepared.summary["rejects_by_reason"] == {"lyrics_unusable": 1}


# -- the stored values equal the model library's encoders ----------------------------------------------------------


def _vae_sums(vae) -> list[int]:
    """Terms of each convolution's sums along the VAE encoder, for float32 reordering bounds."""
    convs = [m for m in vae.encoder.modules() if isinstance(m, torch.nn.Conv1d)]
    return [m.in_channels // m.groups * m.kernel_size[0] for m in convs]


@pytest.mark.integration
def test_stored_latents_equal_encode_latents_of_the_stored_audio(prepared: SimpleNamespace) -> None:
    from tunekit.audio.io import read_audio

    pipe = prepared.pipe
    rtol = reorder_rtol(*_vae_sums(pipe.vae))
    for w in prepared.windows:
        tensors, _ = _load(prepared.out / w["latents_file"])
        audio, rate = read_audio(prepared.out / w["audio_path"], start=w["offset_frames"], frames=w["frames"])
        assert rate == RATE and audio.shape == (2, w["frames"])
        mean, std = acestep.encode_latents(pipe, audio)
        # The full windows of a track were encoded in one batch, the final partial one alone.
        scale = float(mean.abs().max())
        assert_close(tensors[f"{w['window_id']}/mean"], mean, atol=rtol * scale, what=f"{w['window_id']} mean")
        assert_close(tensors[f"{w['window_id']}/std"], std, atol=rtol * scale, what=f"{w['window_id']} std")


@pytest.mark.integration
def test_stored_conditioning_equals_encode_conditions(prepared: SimpleNamespace) -> None:
    pipe = prepared.pipe
    rtol = reorder_rtol(*CONDITION_SUMS)
    signature = {"vocal/lrc_song.wav": "3"}  # its sidecar says time_signature 3/4
    checked = 0
    for path, (_, lyrics, _, language) in TRACKS.items():
        for w, lyric in zip(prepared.by_track[prepared.tracks[path]["track_id"]], lyrics, strict=True):
            bpm = None if w["bpm"] is None or w["bpm_uncertain"] else w["bpm"]
            key = None if w["key"] is None or w["key_uncertain"] else w["key"]
            assert w["caption"], w["window_id"]
            [expected] = acestep.encode_conditions(
                pipe, [w["caption"]], [lyric], seconds=w["duration_s"], bpm=bpm, keyscale=key,
                timesignature=signature.get(path), language=language,
            )  # fmt: skip
            tensors, _ = _load(prepared.out / w["latents_file"])
            stored = tensors[f"{w['window_id']}/cond"]
            tol = rtol * float(expected.states.abs().max())
            assert_close(stored, expected.states, atol=tol, what=f"{w['window_id']} cond")
            checked += 1
    assert checked == len(prepared.windows)
    # The metas reach the encoder: without the time signature the first window's condition is another one.
    w = prepared.by_track[prepared.tracks["vocal/lrc_song.wav"]["track_id"]][0]
    [other] = acestep.encode_conditions(pipe, [w["caption"]], ["[verse]\nfirst line"], seconds=5.0, language="en",
                                        bpm=None if w["bpm_uncertain"] else w["bpm"],
                                        keyscale=None if w["key_uncertain"] else w["key"])  # fmt: skip
    stored = _load(prepared.out / w["latents_file"])[0][f"{w['window_id']}/cond"]
    assert stored.shape != other.states.shape or norm_ratio(other.states, stored) > 1e-3


# -- units ---------------------------------------------------------------------------------------------------------


def test_batches_of_one_length_and_the_tiling_switch(prepared: SimpleNamespace) -> None:
    vae = prepared.pipe.vae
    g = torch.Generator().manual_seed(5)
    short = [(0.1 * torch.randn(2, 2 * RATE + 700, generator=g)).numpy() for _ in range(3)]
    odd = (0.1 * torch.randn(2, RATE + 5, generator=g)).numpy()
    got = lat.encode_latent_batch(vae, [*short, odd], tiling=[False] * 4, batch_size=2)
    rtol = reorder_rtol(*_vae_sums(vae))
    for x, (mean, std) in zip([*short, odd], got, strict=True):
        ref_mean, ref_std = acestep.encode_latents(vae, x)
        assert mean.shape == ref_mean.shape
        assert_close(mean, ref_mean, atol=rtol * float(ref_mean.abs().max()), what="batched mean")
        assert_close(std, ref_std, atol=rtol * float(ref_mean.abs().max()), what="batched std")
    # Above the VAE's tile length (30 s; 2 s here, to stay fast) the switch matters: tiled equals the library's
    # (always tiled) encode exactly, untiled is the whole-window encode, and the two differ.
    tiles = vae.tile_sample_min_length, vae.tile_sample_overlap
    vae.tile_sample_min_length, vae.tile_sample_overlap = 2 * RATE, RATE // 4
    try:
        long = (0.1 * torch.randn(2, 3 * RATE, generator=g)).numpy()
        [(tiled, _)] = lat.encode_latent_batch(vae, [long], tiling=[True], batch_size=1)
        [(whole, _)] = lat.encode_latent_batch(vae, [long], tiling=[False], batch_size=1)
        assert torch.equal(tiled, acestep.encode_latents(vae, long)[0])
        vae.disable_tiling()
        with torch.no_grad():
            direct = vae.encode(torch.from_numpy(long)[None]).latent_dist.mean[0].T
    finally:
        vae.tile_sample_min_length, vae.tile_sample_overlap = tiles
        vae.enable_tiling()
    assert torch.equal(whole, direct) and not torch.equal(tiled, whole)
    cfg = lat.LatentsConfig()
    assert [lat.use_tiling(cfg, s) for s in (30.0, 60.0, 61.0)] == [False, False, True]
    assert lat.use_tiling(lat.LatentsConfig(vae_tiling="true"), 5.0)
    assert not lat.use_tiling(lat.LatentsConfig(vae_tiling="False"), 600.0)


def test_condition_inputs_come_from_the_window_tags() -> None:
    lyrics = track_lyrics(Path("/nonexistent/x.wav"), Path("/nonexistent"), SimpleNamespace(lyrics=LRC, language="EN"),
                          instrumental=False)  # fmt: skip
    window = SimpleNamespace(start_s=5.0, duration_s=5.0, extra={
        "caption": "a calm waltz", "bpm": 92.4, "bpm_uncertain": False, "key": "A minor", "key_uncertain": True})
    item = lat.condition_input(window, lyrics, "6/8")
    assert item == lat.ConditionInput("a calm waltz", "second line\nthird line", 5.0, 92.4, None, "6", "en")
    window.extra.update(bpm_uncertain=True, key_uncertain=False, time_signature="4")
    item = lat.condition_input(window, lyrics, "6/8")
    assert (item.bpm, item.keyscale, item.timesignature) == (None, "A minor", "4")
    assert [lat.time_signature(v) for v in ("3/4", " 4 ", 6, "0", "waltz", None)] == ["3", "4", "6", None, None, None]
    assert item.key("a" * 64) != item.key("b" * 64)  # the checkpoint is part of the cache key


def test_lrc_timestamps_are_stripped_and_lines_timed() -> None:
    text, timed = parse_lyrics(
        "[ti:x]\n[offset:+500]\n[chorus]\n[00:10.00][01:00.5]sing <00:10.20>it\n\n[00:20.25]second\nlast words")
    assert text == "[chorus]\nsing it\nsecond\nlast words\nsing it"
    assert timed == ((9.5, "[chorus]"), (9.5, "sing it"), (19.75, "second"), (19.75, "last words"), (60.0, "sing it"))
    assert parse_lyrics("plain words\n\n[verse]\nmore") == ("plain words\n\n[verse]\nmore", ())


def test_lyrics_sources_in_order(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    audio = root / "a" / "song.wav"
    audio.parent.mkdir(parents=True)
    meta = SimpleNamespace(lyrics="from metadata", lyrics_file=None, language=" Ja ")
    assert track_lyrics(audio, root, meta, instrumental=False) == Lyrics("from metadata", "metadata", "ja")
    assert track_lyrics(audio, root, meta, instrumental=True) == Lyrics(INSTRUMENTAL, "instrumental")
    assert track_lyrics(audio, root, SimpleNamespace(), instrumental=False) == Lyrics(INSTRUMENTAL, None)
    (root / "lyrics").mkdir()
    (root / "lyrics" / "song.lrc").write_text("[00:01.00]timed from a file\n")
    meta.lyrics_file = "lyrics/song.lrc"
    timed = ((1.0, "timed from a file"),)
    assert track_lyrics(audio, root, meta, instrumental=False) == Lyrics("timed from a file", "metadata", "ja", timed)
    audio.with_suffix(".txt").write_text("sidecar text\n")
    assert track_lyrics(audio, root, meta, instrumental=False) == Lyrics("sidecar text", "sidecar_txt", "ja")
    audio.with_suffix(".lrc").write_text("[00:02.00]sidecar lrc\n")
    found = track_lyrics(audio, root, meta, instrumental=False)
    assert (found.text, found.source) == ("sidecar lrc", "sidecar_lrc")


@pytest.mark.parametrize(
    ("named", "message"),
    [
        ("../outside.txt", "leaves the corpus root"),
        ("/etc/hostname", "not a path relative to the corpus root"),
        ("link/outside.txt", "leaves the corpus root"),
        ("notes.md", "not a .txt or .lrc file"),
        ("missing.txt", "does not exist"),
        ("latin1.txt", "is not UTF-8 text"),
    ],
)
def test_unusable_lyrics_files_are_refused(tmp_path: Path, named: str, message: str) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("not for reading")
    os.symlink(tmp_path, root / "link")
    (root / "notes.md").write_text("# notes")
    (root / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    meta = SimpleNamespace(lyrics="ignored when a file is named", lyrics_file=named, language=None)
    with pytest.raises(LyricsError, match=message):
        track_lyrics(root / "song.wav", root, meta, instrumental=False)
    (root / "song.txt").write_bytes("caf\xe9".encode("latin-1"))  # a sidecar is read first, and checked too
    with pytest.raises(LyricsError, match="song.txt is not UTF-8 text"):
        track_lyrics(root / "song.wav", root, SimpleNamespace(), instrumental=False)


def test_metadata_reads_lyrics_fields(tmp_path: Path) -> None:
    from tunekit.corpus.metadata import load_corpus_metadata

    (tmp_path / "a.json").write_text(json.dumps({"lyrics": ["line one", "line two"], "lang": "fr"}))
    (tmp_path / "metadata.csv").write_text("path,lyrics_path,language\nb.wav,words/b.lrc,de\n")
    meta = load_corpus_metadata(tmp_path, read_embedded_tags=False)
    a, b = meta.for_track(tmp_path / "a.wav"), meta.for_track(tmp_path / "b.wav")
    assert (a.lyrics, a.language, a.lyrics_file) == ("line one\nline two", "fr", None)
    assert (b.lyrics, b.language, b.lyrics_file) == (None, "de", "words/b.lrc")


def test_config_and_checkpoint_problems_name_their_keys(tmp_path: Path) -> None:
    from tunekit.prep.config import PrepConfig

    cfg = PrepConfig()
    cfg.latents = lat.LatentsConfig(batch_size=0, threads=-1, cond_dtype="float16", vae_tiling="sometimes",
                                    tiling_above_s=0)  # fmt: skip
    problems = PrepConfig.problems(cfg)
    for key in ("batch_size", "threads", "cond_dtype", "vae_tiling", "tiling_above_s"):
        assert any(p.startswith(f"latents.{key}") for p in problems), (key, problems)
    assert lat.LatentsConfig(vae_tiling="True").problems() == []
    models = SimpleNamespace(tiny=True, cache_dir=None)
    missing = lat.latents_preflight({"model": str(tmp_path / "nothing"), "device": "cpu"}, models)
    assert len(missing) == 1 and missing[0].startswith("latents.model") and "does not exist" in missing[0]
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableAudioPipeline"}))
    wrong = lat.latents_preflight({"model": str(other), "device": "cpu"}, models)
    assert len(wrong) == 1 and "StableAudioPipeline checkpoint, not ACE-Step" in wrong[0], wrong
    assert lat.latents_preflight({"model": TURBO, "device": "cpu"}, models) == []
    assert lat.latents_preflight({"enabled": False, "model": str(other)}, models) == []


# -- the stage cache (last: it re-runs into the prepared output) -----------------------------------------------------


@pytest.mark.integration
def test_rerun_does_no_work_and_another_checkpoint_recomputes(prepared: SimpleNamespace,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from tunekit.prep.run import run_prep

    out = prepared.out
    first = prepared.summary["models"]["latents"]["digest"][:12]
    files = sorted((out / "latents" / first).iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in files}
    n = len(prepared.windows) + 1  # the rejected track's window was VAE-encoded before its lyrics were read

    def no_model(*args, **kwargs):
        raise AssertionError("a re-run loaded a model")

    monkeypatch.setattr(lat, "_vae", no_model)
    monkeypatch.setattr(lat, "_condition_pipeline", no_model)
    assert run_prep(acestep_config(prepared.corpus, out)) == 0
    stats = json.loads((out / "summary.json").read_text())["stages"]["latents"]
    assert (stats["computed"], stats["cached"], stats["failed"]) == (0, n, 0), stats
    assert {p.name: p.stat().st_mtime_ns for p in sorted((out / "latents" / first).iterdir())} == stamps
    assert read_table(out / "windows.parquet") == prepared.windows

    monkeypatch.undo()
    assert run_prep(acestep_config(prepared.corpus, out, f"latents.model={BASE}", "latents.cond_dtype=bfloat16")) == 0
    summary = json.loads((out / "summary.json").read_text())
    stats, facts = summary["stages"]["latents"], summary["models"]["latents"]
    assert (stats["computed"], stats["cached"]) == (n, 0), stats
    assert (facts["model"], facts["variant"]) == (BASE, "base") and facts["digest"][:12] != first
    windows = read_table(out / "windows.parquet")
    assert {w["latents_file"].split("/")[1] for w in windows} == {facts["digest"][:12]}
    assert sorted(p.name for p in (out / "latents" / first).iterdir()) == sorted(stamps)  # the other stays apart
    w = windows[0]
    tensors, meta = _load(out / w["latents_file"])
    assert meta["variant"] == "base" and tensors[f"{w['window_id']}/cond"].dtype == torch.bfloat16


def test_safetensors_files_are_a_function_of_their_content() -> None:
    """The header is written with sorted keys (safetensors itself writes metadata in hash order, which differs
    between processes, so a Ray worker and the local pool wrote other bytes); any reader reads it as before."""
    import json

    from safetensors.torch import load

    from tunekit.prep.latents import safetensors_bytes

    tensors = {"mean": torch.arange(6.0).reshape(2, 3), "std": torch.ones(2, 3), "cond": torch.zeros(1, 4)}
    meta = {f"key{i}": str(i) for i in range(12)}
    a = safetensors_bytes(tensors, meta)
    b = safetensors_bytes(dict(reversed(tensors.items())), dict(reversed(meta.items())))
    assert a == b
    n = int.from_bytes(a[:8], "little")
    header = json.loads(a[8 : 8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(meta)
    assert (8 + n) % 8 == 0  # the data stays aligned
    loaded = load(a)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())

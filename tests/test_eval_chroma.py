"""Chroma cosine similarity (audiocraft's metric for melody-conditioned MusicGen): closed forms for chords and
their transpositions, clips against themselves, octaves and other pitch classes, the frames compared, the paired
difference, and run mode conditioning a melody model on each prompt's own held-out window."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunekit.eval.chroma_cosine import HOP, RATE, ClipChroma, Melody, clip_chroma, frame_cosines, melody_features

pytestmark = pytest.mark.usefixtures("one_torch_thread")

C4 = 261.6255653005986  # pitch class 0
MAJOR = (0, 4, 7)


def _hz(semitones_from_c4: float) -> float:
    return C4 * 2 ** (semitones_from_c4 / 12)


def _notes(seconds: float, rate: int, parts: list[tuple[float, float]]) -> np.ndarray:
    """A sum of sines: (semitones from C4, amplitude) each."""
    t = np.arange(int(seconds * rate)) / rate
    return sum(a * np.sin(2 * np.pi * _hz(s) * t) for s, a in parts).astype(np.float32)


def _chord(root: int, seconds: float = 2.0, rate: int = RATE) -> np.ndarray:
    """A major triad on `root` (semitones from C4) whose root is the loudest note."""
    return _notes(seconds, rate, [(root + step, 0.4 if step == 0 else 0.2) for step in MAJOR])


def _indicator(pitch_classes: set[int]) -> list[float]:
    return [1.0 if k in pitch_classes else 0.0 for k in range(12)]


@pytest.mark.parametrize("shift", range(12))
def test_chord_vectors_against_their_transpositions_give_the_closed_form(shift):
    """Equal-weight triads: cos = |shared pitch classes| / 3; a weighted chord: Σ a_k b_k / (‖a‖ ‖b‖)."""
    triad = {p % 12 for p in MAJOR}
    moved = {(p + shift) % 12 for p in MAJOR}
    got = frame_cosines(np.array([_indicator(triad)]), np.array([_indicator(moved)]))
    assert got.shape == (1,)
    assert abs(got[0] - len(triad & moved) / 3) <= 4 * np.finfo(np.float64).eps, (shift, got[0])

    weights = {0: 3.0, 4: 2.0, 7: 1.5, 10: 0.5}  # C7, root loudest
    a = [weights.get(k, 0.0) for k in range(12)]
    b = [weights.get((k - shift) % 12, 0.0) for k in range(12)]
    closed = sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    got = frame_cosines(np.array([a]), np.array([b]))[0]
    assert abs(got - closed) <= 8 * np.finfo(np.float64).eps, (shift, got, closed)


def test_a_silent_frame_has_cosine_zero_not_nan():
    got = frame_cosines(np.zeros((2, 12)), np.array([_indicator({0}), np.zeros(12)]))
    assert got.tolist() == [0.0, 0.0]


def test_a_clip_against_itself_an_octave_and_another_pitch_class():
    melody = _chord(0)
    assert clip_chroma(melody, RATE, Melody.of(melody, RATE)).mean == 1.0
    assert clip_chroma(_chord(12), RATE, Melody.of(melody, RATE)).mean == 1.0  # chroma folds octaves
    assert clip_chroma(_chord(-12), RATE, Melody.of(melody, RATE)).mean == 1.0
    # Argmax chroma is the one-hot vector of the loudest pitch class (the root): transposing the chord by s
    # semitones gives e_0 · e_s = [s ≡ 0 mod 12].
    for shift in (4, 7, 5, 1):
        assert (melody_features(_chord(shift), RATE).argmax(axis=1) == shift).all()
        assert clip_chroma(_chord(shift), RATE, Melody.of(melody, RATE)).mean == 0.0, shift


def test_half_the_frames_following_the_melody_score_one_half():
    """The clip switches from the melody's note to another halfway between two frame centres (15.5 hops): the
    16 frames centred before the switch match, the 16 after do not."""
    seconds = 4.0
    n = int(seconds * RATE)
    switch = int(15.5 * HOP)
    melody = _notes(seconds, RATE, [(0, 0.4)])
    other = _notes(seconds, RATE, [(7, 0.4)])
    clip = np.concatenate([melody[:switch], other[switch:]])
    assert math.ceil(n / HOP) == 32
    got = clip_chroma(clip, RATE, Melody.of(melody, RATE))
    assert got.frames == 32 and got.total == 16.0 and got.mean == 0.5


def test_rates_channels_and_the_frames_compared():
    """Both sides are mixed to mono and resampled to 32 kHz; the frames compared are ceil(melody samples / hop)."""
    melody = Melody.of(_chord(0, 1.0, 44100), 44100)
    assert melody.frames == math.ceil(32000 / HOP) == 8
    stereo_48k = np.stack([_chord(0, 2.0, 48000), _chord(12, 2.0, 48000)])
    got = clip_chroma(stereo_48k, 48000, melody)
    assert got.frames == 8 and got.mean == 1.0  # a longer clip is compared over the melody's frames
    short = clip_chroma(_chord(0, 0.5, RATE), RATE, melody)
    assert short.frames == math.ceil(RATE / 2 / HOP) == 4  # a shorter clip: the frames its own length covers


def test_every_clip_needs_its_melody(tmp_path):
    from tunekit.errors import TunekitError
    from tunekit.eval.chroma_cosine import set_chroma
    from tunekit.eval.sets import AudioItem, AudioSet

    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", _chord(0, 1.0), RATE)
    clips = AudioSet("base", tmp_path, "folder", [AudioItem(n, tmp_path / f"{n}.wav") for n in ("a", "b")])
    got = set_chroma(clips, {"a": clips.items[0], "b": clips.items[1]})
    assert got == {"a": ClipChroma(8.0, 8), "b": ClipChroma(8.0, 8)}
    with pytest.raises(TunekitError, match=r"no melody for clips \['b'\]"):
        set_chroma(clips, {"a": clips.items[0]})


def _scored(name: str, per_clip: dict[str, ClipChroma]):
    from tunekit.eval.score import SetScores
    from tunekit.eval.sets import AudioItem, AudioSet

    items = [AudioItem(cid, Path(f"{cid}.wav")) for cid in per_clip]
    return SetScores(name=name, audio_set=AudioSet(name, Path("."), "folder", items), metrics={}, chroma=per_clip)


def test_paired_difference_is_taken_over_frames_and_decides_at_enough_prompts():
    from tunekit.eval.chroma_cosine import chroma_fields
    from tunekit.eval.paired import resample_counts
    from tunekit.eval.score import paired_deltas

    rng = np.random.default_rng(3)
    ids = [f"p{i:02d}" for i in range(24)]
    frames = rng.integers(4, 40, len(ids))
    base = {i: ClipChroma(float(rng.integers(0, f + 1)), int(f)) for i, f in zip(ids, frames, strict=True)}
    tuned = {i: ClipChroma(min(float(f), c.total + float(rng.integers(1, 4))), c.frames)
             for (i, c), f in zip(base.items(), frames, strict=True)}
    deltas = paired_deltas(_scored("base", base), _scored("finetuned", tuned), {}, [], resamples=400, seed=1)
    assert set(deltas) == {"chroma_cosine"}
    d = deltas["chroma_cosine"]

    def frame_mean(per_clip, weights):
        return sum(w * per_clip[i].total for i, w in zip(ids, weights, strict=True)) / sum(
            w * per_clip[i].frames for i, w in zip(ids, weights, strict=True))

    ones = [1] * len(ids)
    assert d.value == pytest.approx(frame_mean(tuned, ones) - frame_mean(base, ones), abs=1e-12)
    assert frame_mean(base, ones) == pytest.approx(chroma_fields(base)["chroma_cosine"], abs=1e-15)
    # The interval comes from the same resamples of prompts as every other metric.
    counts = resample_counts(len(ids), 400, 1)
    diffs = sorted(frame_mean(tuned, row) - frame_mean(base, row) for row in counts)
    assert d.ci95[0] == pytest.approx(np.percentile(diffs, 2.5), abs=1e-12)
    assert d.ci95[1] == pytest.approx(np.percentile(diffs, 97.5), abs=1e-12)
    assert d.lower_is_better is False and d.verdict == "better"  # every clip gained matching frames


class _Sampler:
    """A stand-in sampler that records what it was given and plays the strongest pitch class of each melody."""

    description = "stand-in"

    def __init__(self, takes_melody: bool | None) -> None:
        if takes_melody is not None:
            self.takes_melody = takes_melody
        self.calls: list[dict] = []

    def generate(self, prompts, seconds, *, seed=0, **options):
        self.calls.append({"prompts": prompts, **options})
        chroma = options.get("chroma")
        out = np.zeros((len(prompts), 1, int(seconds * RATE)), np.float32)
        for b in range(len(prompts) if chroma is not None else 0):
            out[b, 0] = _notes(seconds, RATE, [(int(chroma[b].sum(dim=0).argmax()), 0.4)])
        return out, RATE


def test_run_mode_gives_a_melody_model_each_prompts_own_window(tmp_path):
    from tunekit.eval.config import EvalConfig
    from tunekit.eval.run_mode import generate_set
    from tunekit.eval.sets import AudioItem

    windows = {}
    for i, root in enumerate((0, 7, 3)):
        sf.write(tmp_path / f"w{i}.wav", _chord(root, 1.0, 44100), 44100)
        windows[f"w{i}"] = AudioItem(f"w{i}", tmp_path / f"w{i}.wav", prompt=f"prompt {i}")
    prompts = list(windows.values())
    config = EvalConfig(batch_size=2)

    melodic = _Sampler(True)
    audio_set, info = generate_set("base", lambda: melodic, prompts, tmp_path / "melodic", config, "cpu", {}, 1.0,
                                   windows)
    assert info["melody"] is True and [len(c["prompts"]) for c in melodic.calls] == [2, 1]
    given = [c["chroma"] for c in melodic.calls]
    assert tuple(given[0].shape) == (2, 1 + 32000 // HOP, 12)  # 1 s at 32 kHz, centred frames
    for batch, first in zip(given, (0, 2), strict=True):
        for b in range(batch.shape[0]):
            window = windows[f"w{first + b}"]
            np.testing.assert_array_equal(batch[b].numpy(), melody_features(*window.load()))
    # The stand-in plays the melody it was given, so its clips follow their windows.
    from tunekit.eval.chroma_cosine import set_chroma

    scores = set_chroma(audio_set, windows)
    assert all(c.mean == 1.0 for c in scores.values()), scores

    text_only = _Sampler(None)
    _, info = generate_set("base", lambda: text_only, prompts, tmp_path / "text", config, "cpu", {}, 1.0, windows)
    assert info["melody"] is False and all(c["chroma"] is None for c in text_only.calls)

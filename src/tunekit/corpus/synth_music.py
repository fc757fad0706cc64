"""Songs for the synthetic demo corpus: styles, harmony, arrangement and the mix of one track.

A track is a pure function of its `Song` and a seed: chords follow functional progressions that
establish the key (tonic/dominant), the bass plays chord roots, the kick marks the beat, melodies are
built from the scale, and sections (intro/verse/chorus/bridge/outro) change instrumentation and chords.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import oaconvolve

from tunekit.corpus.synth_dsp import NoteCache, add_panned, drum_kit, filt, reverb_ir, sing

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}

# Roman numeral -> (root semitones above the tonic, triad intervals, seventh interval)
CHORDS = {
    "I": (0, (0, 4, 7), 11), "ii": (2, (0, 3, 7), 10), "iii": (4, (0, 3, 7), 10), "IV": (5, (0, 4, 7), 11),
    "V": (7, (0, 4, 7), 10), "vi": (9, (0, 3, 7), 10), "i": (0, (0, 3, 7), 10), "iv": (5, (0, 3, 7), 10),
    "v": (7, (0, 3, 7), 10), "III": (3, (0, 4, 7), 11), "VI": (8, (0, 4, 7), 11), "VII": (10, (0, 4, 7), 10),
}  # fmt: skip

SECTION_PARTS = {
    "intro": {"chords", "hats", "arp"},
    "verse": {"kick", "snare", "hats", "bass", "chords", "melody", "arp"},
    "chorus": {"kick", "snare", "hats", "open_hat", "bass", "chords", "melody", "stabs", "arp", "crash"},
    "bridge": {"hats", "bass", "chords", "melody", "arp"},
    "outro": {"kick", "hats", "bass", "chords"},
}


@dataclass(frozen=True)
class Style:
    """How one style sounds: tempo range, meter, grooves, instruments and progressions per mode."""

    name: str  # folder-friendly id
    genre: str  # human-readable genre
    bpm_range: tuple[int, int]  # inclusive range tempos are drawn from
    meter: int  # beats per bar
    drums: dict[str, str]  # instrument -> one bar of steps ('x' loud, 'o' soft, '.' rest), 4 steps per beat
    bass_pattern: tuple[tuple[float, float, str], ...]  # (beat, length in beats, 'R' root | '5' fifth | '8' octave)
    comp_pattern: tuple[tuple[float, float], ...]  # chord hits: (beat, length in beats)
    progressions: dict[str, dict[str, tuple[str, ...]]]  # mode -> section -> four chords, one per bar
    chord_instrument: str
    bass_instrument: str
    melody_instrument: str
    chord_layer: str | None = None  # a second chord instrument holding full triads for the bar, if any
    arp_instrument: str | None = None  # arpeggio over the chord, if any
    arp_step: float = 0.5  # arpeggio note length in beats
    stab_instrument: str | None = None  # off-beat stabs in choruses, if any
    sevenths: bool = False  # add the chord's seventh
    swing: float = 0.0  # delay of off-beat sixteenths, as a fraction of a sixteenth
    melody_density: float = 0.5  # chance of a note on each eighth
    reverb_s: float = 1.2  # reverb decay (RT60)
    reverb_mix: float = 0.2
    lofi: bool = False  # tape/vinyl colouring


_MAJOR = {"verse": ("I", "IV", "V", "I"), "chorus": ("I", "V", "vi", "IV"), "bridge": ("IV", "I", "V", "V")}
_MINOR = {"verse": ("i", "iv", "V", "i"), "chorus": ("i", "VI", "iv", "V"), "bridge": ("iv", "i", "V", "V")}

STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style(
            name="lofi_hiphop", genre="lo-fi hip-hop", bpm_range=(76, 90), meter=4,
            drums={"kick": "x.....x...x.....", "snare": "....x.......x...", "hats": "x.o.x.o.x.o.x.oo"},
            bass_pattern=((0.0, 1.5, "R"), (1.5, 0.5, "R"), (2.5, 1.0, "5"), (3.5, 0.5, "R")),
            comp_pattern=((0.0, 3.6),),
            progressions={"minor": {"verse": ("i", "iv", "v", "i"), "chorus": ("i", "VI", "iv", "V"),
                                    "bridge": ("iv", "i", "V", "V")}, "major": _MAJOR},
            chord_instrument="electric_piano", bass_instrument="sub_bass", melody_instrument="bell",
            sevenths=True, swing=0.35, melody_density=0.4, reverb_s=1.0, reverb_mix=0.15, lofi=True,
        ),
        Style(
            name="house", genre="house", bpm_range=(118, 126), meter=4,
            drums={"kick": "x...x...x...x...", "snare": "....x.......x...", "hats": "o.o.o.o.o.o.o.o.",
                   "open_hat": "..x...x...x...x."},
            bass_pattern=((0.5, 0.4, "R"), (1.5, 0.4, "R"), (2.5, 0.4, "8"), (3.5, 0.4, "R")),
            comp_pattern=((0.0, 4.0),),
            progressions={"minor": _MINOR, "major": _MAJOR},
            chord_instrument="pad", bass_instrument="sub_bass", melody_instrument="lead",
            stab_instrument="organ_stab", melody_density=0.45, reverb_s=1.4, reverb_mix=0.18,
        ),
        Style(
            name="ambient", genre="ambient", bpm_range=(72, 84), meter=4,
            drums={"kick": "o...o...o...o...", "shaker": "o.o.o.o.o.o.o.o.", "rim": "....o.......o..."},
            bass_pattern=((0.0, 4.0, "R"),),
            comp_pattern=((0.0, 4.0),),
            progressions={"major": {"verse": ("I", "IV", "I", "V"), "chorus": ("I", "vi", "IV", "V"),
                                    "bridge": ("IV", "I", "IV", "V")}, "minor": _MINOR},
            chord_instrument="pad", bass_instrument="sub_bass", melody_instrument="bell",
            arp_instrument="pluck", arp_step=1.0, melody_density=0.25, reverb_s=3.0, reverb_mix=0.35,
        ),
        Style(
            name="rock", genre="rock", bpm_range=(104, 132), meter=4,
            drums={"kick": "x.....x.x.......", "snare": "....x.......x...", "hats": "x.x.x.x.x.x.x.x."},
            bass_pattern=tuple((i * 0.5, 0.45, "R") for i in range(8)),
            comp_pattern=tuple((i * 0.5, 0.45) for i in range(8)),
            progressions={"major": {"verse": ("I", "IV", "V", "I"), "chorus": ("I", "V", "IV", "V"),
                                    "bridge": ("vi", "IV", "V", "V")}, "minor": _MINOR},
            chord_instrument="power_chord", chord_layer="organ_stab", bass_instrument="picked_bass",
            melody_instrument="lead",
            melody_density=0.55, reverb_s=1.0, reverb_mix=0.12,
        ),
        Style(
            name="waltz", genre="waltz", bpm_range=(88, 104), meter=3,
            drums={"kick": "x...........", "hats": "x...o...o...", "rim": "....o...o..."},
            bass_pattern=((0.0, 1.0, "R"),),
            comp_pattern=((1.0, 0.9), (2.0, 0.9)),
            progressions={"major": {"verse": ("I", "IV", "V", "I"), "chorus": ("I", "vi", "IV", "V"),
                                    "bridge": ("IV", "I", "V", "V")}, "minor": _MINOR},
            chord_instrument="piano", bass_instrument="upright_bass", melody_instrument="pluck",
            melody_density=0.5, reverb_s=1.6, reverb_mix=0.22,
        ),
        Style(
            name="bossa_nova", genre="bossa nova", bpm_range=(120, 136), meter=4,
            drums={"kick": "x..xx..xx..xx..x", "rim": "x..x..x...x..x..", "shaker": "xoooxoooxoooxooo"},
            bass_pattern=((0.0, 1.5, "R"), (1.5, 0.5, "R"), (2.0, 1.5, "5"), (3.5, 0.5, "R")),
            comp_pattern=((0.0, 0.75), (1.5, 0.5), (2.5, 0.75), (3.5, 0.5)),
            progressions={"major": {"verse": ("I", "vi", "IV", "V"), "chorus": ("I", "IV", "V", "I"),
                                    "bridge": ("IV", "V", "I", "V")}, "minor": _MINOR},
            chord_instrument="pluck", bass_instrument="upright_bass", melody_instrument="electric_piano",
            sevenths=True, melody_density=0.45, reverb_s=1.2, reverb_mix=0.15,
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Song:
    """The musical facts of one track, chosen before rendering and written to the ground truth."""

    style: str
    bpm: float
    tonic: int  # pitch class, 0 = C
    scale: str  # "major" | "minor"
    seconds: float  # rendered length; the last bars fade out
    vocals: bool

    @property
    def key(self) -> str:
        return f"{NOTE_NAMES[self.tonic]} {self.scale}"

    @property
    def meter(self) -> int:
        return STYLES[self.style].meter

    @property
    def bar_seconds(self) -> float:
        return self.meter * 60.0 / self.bpm

    @property
    def n_bars(self) -> int:
        """Bars that fit, leaving about a second for the last chord to ring."""
        return max(1, int((self.seconds - 1.0) / self.bar_seconds + 0.5))


def section_starts(song: Song, sections: list[tuple[str, int]]) -> list[float]:
    """Start time in seconds of each section."""
    starts, bar = [], 0
    for _, n_bars in sections:
        starts.append(bar * song.bar_seconds)
        bar += n_bars
    return starts


def plan_sections(n_bars: int) -> list[tuple[str, int]]:
    """Split `n_bars` into intro / verse / chorus / … / outro, in whole 4-bar phrases where possible."""
    intro = 4 if n_bars >= 16 else (2 if n_bars >= 6 else 0)
    outro = 4 if n_bars >= 20 else (2 if n_bars >= 8 else 0)
    body = n_bars - intro - outro
    sections: list[tuple[str, int]] = [("intro", intro)] if intro else []
    names = ("verse", "chorus", "verse", "chorus", "bridge", "chorus")
    i = 0
    while body > 0:
        length = min(8, body) if body - 8 >= 4 or body <= 8 else 4
        sections.append((names[i % len(names)], length))
        body -= length
        i += 1
    if outro:
        sections.append(("outro", outro))
    return sections


def chord_notes(song: Song, numeral: str, sevenths: bool) -> tuple[int, list[int]]:
    """(bass root MIDI note, chord MIDI notes in a close voicing around middle C) for a numeral."""
    offset, triad, seventh = CHORDS[numeral]
    root_pc = (song.tonic + offset) % 12
    intervals = list(triad) + ([seventh] if sevenths else [])
    notes = sorted(52 + (root_pc + iv - 52) % 12 for iv in intervals)  # each tone in [52, 64)
    bass_root = 36 + (root_pc - 36) % 12  # [36, 48): C2..B2
    return bass_root, notes


def scale_midi(song: Song, degree: int) -> int:
    """MIDI note of scale `degree` (0 = tonic around G3..F#4; negative and >6 move by octaves)."""
    base = 60 + song.tonic - (12 if song.tonic > 6 else 0)
    steps = SCALES[song.scale]
    return base + steps[degree % 7] + 12 * (degree // 7)


def make_phrase(
    song: Song, style: Style, numerals: tuple[str, ...], rng: np.random.Generator
) -> list[tuple[float, float, int]]:
    """A 4-bar melodic phrase (beat, length, scale degree): a 2-bar motif, repeated with a new ending.

    Strong beats land on chord tones, other notes move by step; the phrase ends on the tonic.
    """
    meter = style.meter
    slots = [b * 0.5 for b in range(2 * meter * 2)]
    onsets = [s for s in slots if s % 1 == 0 and s % meter == 0 or rng.random() < style.melody_density]
    onsets = sorted(set(onsets) - {slots[-1]})  # breathe before the motif repeats
    rhythm = [(s, min((onsets + [2 * meter])[i + 1] - s, 2.0)) for i, s in enumerate(onsets)]
    motif = rhythm + [(s + 2 * meter, d) for s, d in rhythm]

    phrase: list[tuple[float, float, int]] = []
    degree = int(rng.choice([0, 2, 4]))
    for beat, length in motif:
        numeral = numerals[min(int(beat // meter), 3)]
        offset, triad, _ = CHORDS[numeral]
        chord_pcs = {(offset + iv) % 12 for iv in triad}
        step = int(rng.choice([-2, -1, -1, 1, 1, 2]))
        candidate = int(np.clip(degree + step, -2, 9))
        if beat % 1 == 0:  # on the beat: nearest chord tone
            options = [d for d in range(-2, 10) if SCALES[song.scale][d % 7] in chord_pcs]
            candidate = min(options, key=lambda d: (abs(d - candidate), d))
        degree = candidate
        phrase.append((beat, length * 0.92, degree))
    last_beat = 4 * meter - meter
    phrase = [p for p in phrase if p[0] < last_beat]
    phrase.append((float(last_beat), float(meter) * 0.9, 0 if phrase and phrase[-1][2] < 4 else 7))
    return phrase


def _steps(pattern: str, meter: int) -> list[tuple[float, float]]:
    """(beat, velocity) for each hit in a step pattern of 4 steps per beat."""
    hits = []
    for i, c in enumerate(pattern[: 4 * meter]):
        if c in "xo":
            hits.append((i / 4.0, 1.0 if c == "x" else 0.55))
    return hits


def render_song(song: Song, rate: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Render `song` to stereo float64 (2, N) at `rate`, peak-normalised to 0.5; returns (audio, sections)."""
    style = STYLES[song.style]
    meter, beat_s = style.meter, 60.0 / song.bpm
    bar_s = meter * beat_s
    n_total = int(round(song.seconds * rate))
    sections = plan_sections(song.n_bars)
    cache = NoteCache(rate)
    kit = drum_kit(rate, rng, tone=0.9 + 0.2 * rng.random())
    buses = {name: np.zeros((2, n_total), np.float32) for name in ("drums", "bass", "chords", "melody")}
    sixteenth = beat_s / 4.0
    vocal_notes: list[tuple[float, float, float]] = []
    progressions = style.progressions[song.scale]
    phrases = {name: make_phrase(song, style, progressions[name if name in progressions else "verse"], rng)
               for name in ("verse", "chorus", "bridge")}  # fmt: skip
    drum_pan = {"kick": 0.0, "snare": 0.05, "clap": 0.05, "hats": 0.3, "open_hat": 0.35, "rim": -0.3,
                "shaker": 0.4, "crash": -0.25}  # fmt: skip
    drum_gain = {"kick": 1.0, "snare": 0.55, "clap": 0.5, "hats": 0.18, "open_hat": 0.14, "rim": 0.2,
                 "shaker": 0.12, "crash": 0.2}  # fmt: skip

    def at(seconds: float) -> int:
        return int(round(seconds * rate))

    def play(bus: str, instrument: str, t0: float, length_s: float, midi: float, gain: float, position: float) -> None:
        note = cache.note(instrument, midi, at(length_s))
        add_panned(buses[bus], note, at(t0), gain, position)

    bar = 0
    for name, n_bars in sections:
        parts = SECTION_PARTS[name]
        numerals = progressions[name if name in progressions else "verse"]
        if name in ("intro", "outro"):
            numerals = ("I", "IV", "V", "I") if song.scale == "major" else ("i", "iv", "V", "i")
        for j in range(n_bars):
            t_bar = (bar + j) * bar_s
            numeral = numerals[j % 4]
            bass_root, chord = chord_notes(song, numeral, style.sevenths)
            fade = 1.0 - 0.6 * j / max(1, n_bars) if name == "outro" else 1.0
            # drums
            for drum, pattern in style.drums.items():
                if drum not in parts and not (drum in ("shaker", "rim") and "hats" in parts):
                    continue
                for beat, vel in _steps(pattern, meter):
                    swing = style.swing * sixteenth if (beat * 4) % 2 == 1 else 0.0
                    hit = kit["clap" if drum == "snare" and style.name == "house" else drum]
                    gain = drum_gain[drum] * vel * (0.9 + 0.1 * rng.random()) * fade
                    add_panned(buses["drums"], hit, at(t_bar + beat * beat_s + swing), gain, drum_pan[drum])
            if "crash" in parts and j == 0:
                add_panned(buses["drums"], kit["crash"], at(t_bar), drum_gain["crash"], drum_pan["crash"])
            # bass on chord roots
            if "bass" in parts:
                for beat, length, which in style.bass_pattern:
                    midi = bass_root + {"R": 0, "5": 7, "8": 12}[which]
                    play("bass", style.bass_instrument, t_bar + beat * beat_s, length * beat_s, midi, 0.8 * fade, 0.0)
            # chords
            if "chords" in parts:
                for beat, length in style.comp_pattern:
                    t0, dur = t_bar + beat * beat_s, length * beat_s
                    if style.chord_instrument == "power_chord":  # on the root; on-beats left, off-beats right
                        play("chords", "power_chord", t0, dur, bass_root + 12, 0.5, -0.35 if beat % 1 == 0 else 0.35)
                        continue
                    strum = 0.012 if style.chord_instrument in ("pluck", "electric_piano", "piano") else 0.0
                    for k, midi in enumerate(chord):
                        position = -0.4 + 0.8 * k / max(1, len(chord) - 1)
                        play("chords", style.chord_instrument, t0 + k * strum, dur, midi, 0.22 * fade, position)
            if "chords" in parts and style.chord_layer:
                for k, midi in enumerate(chord):
                    play("chords", style.chord_layer, t_bar, 0.95 * bar_s, midi, 0.5 * fade, -0.3 + 0.6 * k / 2)
            if "stabs" in parts and style.stab_instrument:
                for b in range(meter):
                    for midi in chord:
                        t0 = t_bar + (b + 0.5) * beat_s
                        play("chords", style.stab_instrument, t0, 0.3 * beat_s, midi + 12, 0.12, 0.2)
            if "arp" in parts and style.arp_instrument:
                arp = chord + [chord[0] + 12]
                step = style.arp_step
                for e in range(int(round(meter / step))):
                    midi = arp[[0, 1, 2, 3, 2, 1, 0, 1][e % 8] % len(arp)] + 12
                    play("melody", style.arp_instrument, t_bar + e * step * beat_s, step * beat_s, midi, 0.1, 0.45)
        # melody (or the voice) over 4-bar phrases
        if "melody" in parts and name in phrases:
            for p0 in range(0, n_bars - n_bars % 4 if n_bars >= 4 else n_bars, 4):
                t_phrase = (bar + p0) * bar_s
                for beat, length, degree in phrases[name]:
                    if beat >= (n_bars - p0) * meter:
                        continue
                    midi = scale_midi(song, degree) + (12 if name == "chorus" and not song.vocals else 0)
                    t0 = t_phrase + beat * beat_s
                    if song.vocals and name in ("verse", "chorus"):
                        vocal_notes.append((t0, length * beat_s, midi))
                    else:
                        play("melody", style.melody_instrument, t0, length * beat_s, midi, 0.28, -0.15)
        bar += n_bars

    if vocal_notes:
        voice = sing(vocal_notes, n_total, rate, rng).astype(np.float32)
        buses["voice"] = np.stack([voice, voice])
    return _mix(buses, style, rate, rng), sections


def _mix(buses: dict[str, np.ndarray], style: Style, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Balance the buses, add reverb and style colouring; returns float64 stereo peak-normalised to 0.5."""
    gains = {"drums": 0.9, "bass": 0.55, "chords": 0.5, "melody": 0.35, "voice": 0.6}
    for name, bus in buses.items():
        peak = float(np.max(np.abs(bus)))
        if peak > 0:
            bus *= np.float32(gains[name] / peak)
    # chords a little wider: delay the right channel by a few milliseconds
    d = int(0.011 * rate)
    buses["chords"][1, d:] = buses["chords"][1, :-d].copy()
    send = buses["chords"] + buses["melody"] + np.float32(0.3) * buses["drums"]
    if "voice" in buses:
        send += buses["voice"]
    ir = reverb_ir(rate, style.reverb_s, rng)
    wet = np.stack([oaconvolve(send[c], ir[c])[: send.shape[1]] for c in range(2)])
    wet *= np.float32(style.reverb_mix * np.max(np.abs(send)) / max(float(np.max(np.abs(wet))), 1e-12))
    del send
    mix = wet.astype(np.float64)
    del wet
    for bus in buses.values():
        mix += bus
    if style.lofi:
        mix = filt(mix, "lowpass", 5500.0, rate)
        n = mix.shape[1]
        clicks = rng.integers(0, n, size=int(8 * n / rate))
        crackle = np.zeros(n)
        crackle[clicks] = rng.standard_normal(len(clicks))
        mix += 0.02 * filt(crackle, "highpass", 1500.0, rate)[None, :]
        mix += 0.002 * filt(rng.standard_normal(mix.shape, dtype=np.float32), "highpass", 3000.0, rate)
    mix = filt(mix, "highpass", 28.0, rate)
    fade_in = int(0.05 * rate)
    mix[:, :fade_in] *= np.linspace(0.0, 1.0, fade_in)
    fade_out = min(int(1.5 * rate), mix.shape[1] // 5)
    mix[:, -fade_out:] *= np.linspace(1.0, 0.0, fade_out) ** 2
    return mix * (0.5 / np.max(np.abs(mix)))

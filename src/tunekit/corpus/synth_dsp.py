"""Instruments for the synthetic demo corpus: oscillators, envelopes, drums and a formant-synthesised voice.

Every function returns a float64 mono array for one note or hit; randomness comes from the numpy
Generator passed in, so renders are deterministic for a seed. All of it is vectorised numpy/scipy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import signal


def midi_hz(midi: float | np.ndarray) -> float | np.ndarray:
    """Equal-tempered frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ---------------------------------------------------------------- building blocks


@lru_cache(maxsize=256)
def _sos(kind: str, freq: float | tuple[float, float], rate: int, order: int = 2) -> np.ndarray:
    nyq = rate / 2.0
    if kind == "bandpass":
        lo, hi = freq  # type: ignore[misc]
        return signal.butter(order, [lo / nyq, min(hi / nyq, 0.99)], btype="bandpass", output="sos")
    return signal.butter(order, min(float(freq) / nyq, 0.99), btype=kind, output="sos")  # type: ignore[arg-type]


def filt(x: np.ndarray, kind: str, freq: float | tuple[float, float], rate: int, order: int = 2) -> np.ndarray:
    """Butterworth lowpass/highpass/bandpass along the last axis."""
    return signal.sosfilt(_sos(kind, freq, rate, order), x, axis=-1)


def envelope(n_on: int, rate: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """ADSR: linear attack, exponential decay to `sustain`, exponential release after `n_on` samples.

    The array is `n_on` plus five release time constants long, so the tail dies out.
    """
    n_rel = int(5 * release * rate)
    t = np.arange(n_on + n_rel) / rate
    n_att = min(max(1, int(attack * rate)), len(t) - 1)
    env = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / max(decay, 1e-4))
    env[:n_att] = np.linspace(0.0, 1.0, n_att, endpoint=False) * env[n_att]
    if n_on < len(env):
        level = env[min(n_on, len(env) - 1)]
        env[n_on:] = level * np.exp(-(t[n_on:] - t[n_on]) / max(release, 1e-4))
    return env


def saw(freq: np.ndarray | float, n: int, rate: int, phase0: float = 0.0) -> np.ndarray:
    """Band-limited sawtooth (PolyBLEP) for a constant or per-sample frequency."""
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (n,))
    dt = f / rate
    ph = phase0 + np.cumsum(dt) - dt[0]
    t = ph - np.floor(ph)
    y = 2.0 * t - 1.0
    lo = t < dt
    x = t[lo] / dt[lo]
    y[lo] -= x + x - x * x - 1.0
    hi = t > 1.0 - dt
    x = (t[hi] - 1.0) / dt[hi]
    y[hi] -= x * x + x + x + 1.0
    return y


def partials(
    freq: float, n: int, rate: int, ratios: np.ndarray, amps: np.ndarray, decays: np.ndarray
) -> np.ndarray:
    """Additive synthesis: sum of sines at freq*ratios with exponential decays (seconds)."""
    keep = freq * ratios < 0.45 * rate
    ratios, amps, decays = ratios[keep], amps[keep], decays[keep]
    t = np.arange(n) / rate
    osc = np.sin(2 * np.pi * freq * np.outer(ratios, t)) * amps[:, None] * np.exp(-t[None, :] / decays[:, None])
    return osc.sum(axis=0)


def add_panned(bus: np.ndarray, x: np.ndarray, start: int, gain: float = 1.0, position: float = 0.0) -> None:
    """Add mono `x` into stereo `bus` (2, N) from sample `start` with a constant-power pan.

    position -1 is hard left, +1 hard right; 0 puts `gain * x` in both channels. Cropped at the end.
    """
    n = min(x.shape[-1], bus.shape[-1] - start)
    if n <= 0:
        return
    angle = (position + 1.0) * np.pi / 4.0
    bus[0, start : start + n] += (gain * np.sqrt(2.0) * np.cos(angle)) * x[:n]
    bus[1, start : start + n] += (gain * np.sqrt(2.0) * np.sin(angle)) * x[:n]


def reverb_ir(rate: int, seconds: float, rng: np.random.Generator, damp_hz: float = 6000.0) -> np.ndarray:
    """Stereo room impulse response: decorrelated noise with an exponential decay (RT60 = `seconds`)."""
    n = int(0.7 * seconds * rate)  # cut 42 dB down: the rest is inaudible under the dry mix
    t = np.arange(n) / rate
    noise = rng.standard_normal((2, n)) * np.exp(-6.9 * t / seconds)
    noise = filt(noise, "lowpass", damp_hz, rate)
    noise[:, : int(0.012 * rate)] = 0.0  # pre-delay
    return (noise / np.sqrt((noise**2).sum(axis=1, keepdims=True))).astype(np.float32)


# ---------------------------------------------------------------- pitched instruments
# Each takes (midi, n_on, rate) and returns a mono note including its release tail.


def electric_piano(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Rhodes-like: a few harmonics decaying at different speeds plus a quick bell 'tine'."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.004, 1.2, 0.35, 0.18)
    ratios = np.array([1.0, 2.0, 3.0, 4.0, 7.05])
    amps = np.array([1.0, 0.35, 0.12, 0.06, 0.08])
    decays = np.array([2.5, 1.0, 0.5, 0.3, 0.06])
    return partials(f, len(env), rate, ratios, amps, decays) * env


def piano(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Piano-like: slightly inharmonic partials, brighter and faster-decaying upwards."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.002, 4.0, 1.0, 0.12)
    k = np.arange(1, 11, dtype=np.float64)
    ratios = k * np.sqrt(1.0 + 0.0004 * k * k)
    amps = 1.0 / k**1.3
    decays = 2.2 / k**0.7 * (220.0 / max(f, 110.0)) ** 0.3
    return partials(f, len(env), rate, ratios, amps, decays) * env


def pluck(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Nylon-guitar/harp-like pluck: harmonics with 1/k amplitudes and fast upper decays."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.002, 3.0, 1.0, 0.08)
    k = np.arange(1, 13, dtype=np.float64)
    amps = np.sin(np.pi * k * 0.18) / k  # plucked at 18% of the string length
    decays = 1.2 / k**0.8
    return partials(f, len(env), rate, k, amps, decays) * env


def bell(midi: float, n_on: int, rate: int) -> np.ndarray:
    """FM bell/mallet: carrier with a decaying modulation index."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.003, 0.8, 0.25, 0.35)
    t = np.arange(len(env)) / rate
    index = 1.8 * np.exp(-t / 0.25)
    return np.sin(2 * np.pi * f * t + index * np.sin(2 * np.pi * 2.0 * f * t)) * env


def pad(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Warm pad: three detuned sawtooths through a lowpass, slow attack and release."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.35, 1.0, 0.85, 0.6)
    n = len(env)
    x = sum(saw(f * 2.0 ** (c / 1200.0), n, rate, phase0=p) for c, p in ((-9, 0.0), (0, 0.33), (8, 0.71)))
    return filt(x / 3.0, "lowpass", min(2200.0, 6 * f), rate) * env


def organ_stab(midi: float, n_on: int, rate: int) -> np.ndarray:
    """House organ stab: drawbar-like harmonics with a short percussive envelope."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.003, 0.12, 0.4, 0.05)
    ratios = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    amps = np.array([0.5, 1.0, 0.6, 0.3, 0.25])
    return partials(f, len(env), rate, ratios, amps, np.full(5, 10.0)) * env


def lead(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Monophonic synth lead: sawtooth with delayed vibrato through a lowpass."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.01, 0.3, 0.7, 0.12)
    t = np.arange(len(env)) / rate
    vib = 1.0 + 0.004 * np.sin(2 * np.pi * 5.2 * t) * np.clip((t - 0.2) / 0.3, 0.0, 1.0)
    return filt(saw(f * vib, len(env), rate), "lowpass", min(3500.0, 8 * f), rate) * env


def sub_bass(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Sine sub bass with a touch of second harmonic so small speakers hear it."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.006, 0.5, 0.8, 0.05)
    t = np.arange(len(env)) / rate
    return (np.sin(2 * np.pi * f * t) + 0.25 * np.sin(4 * np.pi * f * t)) * env


def picked_bass(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Electric bass: lowpassed sawtooth with pick attack and mild saturation."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.003, 0.4, 0.6, 0.04)
    x = filt(saw(f, len(env), rate), "lowpass", 900.0, rate)
    return np.tanh(1.5 * x * env)


def upright_bass(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Acoustic/upright bass: sine-dominated partials with a woody decay."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.008, 0.9, 0.25, 0.08)
    ratios = np.array([1.0, 2.0, 3.0, 4.0])
    amps = np.array([1.0, 0.45, 0.2, 0.08])
    decays = np.array([1.5, 0.6, 0.3, 0.2])
    return partials(f, len(env), rate, ratios, amps, decays) * env


def power_chord(midi: float, n_on: int, rate: int) -> np.ndarray:
    """Distorted guitar power chord (root, fifth, octave) with palm-muted decay."""
    f = float(midi_hz(midi))
    env = envelope(n_on, rate, 0.002, 0.25, 0.55, 0.06)
    n = len(env)
    x = saw(f, n, rate) + saw(f * 1.4983, n, rate, 0.3) + 0.7 * saw(2 * f, n, rate, 0.6)
    x = np.tanh(4.0 * filt(x, "lowpass", 2500.0, rate))
    return filt(x, "lowpass", 3800.0, rate) * env


INSTRUMENTS = {
    "electric_piano": electric_piano,
    "piano": piano,
    "pluck": pluck,
    "bell": bell,
    "pad": pad,
    "organ_stab": organ_stab,
    "lead": lead,
    "sub_bass": sub_bass,
    "picked_bass": picked_bass,
    "upright_bass": upright_bass,
    "power_chord": power_chord,
}


class NoteCache:
    """Renders each distinct (instrument, pitch, length) once per track; notes repeat a lot in a song."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._notes: dict[tuple[str, float, int], np.ndarray] = {}

    def note(self, instrument: str, midi: float, n_on: int) -> np.ndarray:
        key = (instrument, float(midi), int(n_on))
        if key not in self._notes:
            self._notes[key] = INSTRUMENTS[instrument](midi, max(1, int(n_on)), self.rate)
        return self._notes[key]


# ---------------------------------------------------------------- drums


def drum_kit(rate: int, rng: np.random.Generator, tone: float = 1.0) -> dict[str, np.ndarray]:
    """One-shot drum samples: kick (pitched-down sine sweep), snare, clap, hats, rim, shaker, crash.

    `tone` scales the kick's pitch a little so tracks of the same style differ.
    """

    def t_of(seconds: float) -> np.ndarray:
        return np.arange(int(seconds * rate)) / rate

    def noise(seconds: float) -> np.ndarray:
        return rng.standard_normal(int(seconds * rate))

    kit: dict[str, np.ndarray] = {}
    t = t_of(0.45)
    freq = 48.0 * tone + 120.0 * np.exp(-t / 0.035)
    body = np.sin(2 * np.pi * np.cumsum(freq) / rate) * np.exp(-t / 0.28)
    click = filt(noise(0.45), "highpass", 2500.0, rate) * np.exp(-t / 0.003) * 0.5
    kit["kick"] = np.tanh(1.6 * (body + click)) / np.tanh(1.6)

    t = t_of(0.35)
    tone_part = (np.sin(2 * np.pi * 185 * t) + 0.5 * np.sin(2 * np.pi * 330 * t)) * np.exp(-t / 0.06)
    rattle = filt(noise(0.35), "bandpass", (1200.0, 9000.0), rate) * np.exp(-t / 0.11)
    kit["snare"] = 0.55 * tone_part + 0.9 * rattle

    t = t_of(0.4)
    bursts = sum(np.exp(-np.maximum(t - d, 0.0) / 0.008) * (t >= d) for d in (0.0, 0.011, 0.022))
    tail = np.exp(-np.maximum(t - 0.03, 0.0) / 0.12) * (t >= 0.03)
    kit["clap"] = filt(noise(0.4), "bandpass", (900.0, 4000.0), rate) * (0.6 * bursts + 0.8 * tail)

    t = t_of(0.12)
    kit["hats"] = filt(noise(0.12), "highpass", 7000.0, rate, 4) * np.exp(-t / 0.022)
    t = t_of(0.6)
    kit["open_hat"] = filt(noise(0.6), "highpass", 6500.0, rate, 4) * np.exp(-t / 0.18)

    t = t_of(0.08)
    kit["rim"] = (np.sin(2 * np.pi * 1700 * t) + 0.6 * np.sin(2 * np.pi * 820 * t)) * np.exp(-t / 0.012)

    t = t_of(0.15)
    shake_env = np.minimum(t / 0.015, 1.0) * np.exp(-np.maximum(t - 0.015, 0.0) / 0.04)
    kit["shaker"] = filt(noise(0.15), "bandpass", (4500.0, 12000.0), rate) * shake_env

    t = t_of(2.5)
    kit["crash"] = filt(noise(2.5), "highpass", 3500.0, rate, 2) * np.exp(-t / 0.7) * 0.6

    for name, x in kit.items():
        kit[name] = x / np.max(np.abs(x))
    return kit


def accent_hit(rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sharp, loud strike (damped metal plus a noise click), peak 1; gives a master a high crest factor."""
    t = np.arange(int(0.25 * rate)) / rate
    strike = sum(np.sin(2 * np.pi * f * t) * np.exp(-t / d) for f, d in ((523.0, 0.05), (1307.0, 0.02), (2711.0, 0.01)))
    x = strike + filt(rng.standard_normal(len(t)), "highpass", 2000.0, rate) * np.exp(-t / 0.004)
    return x / np.max(np.abs(x))


# ---------------------------------------------------------------- voice

# (formant Hz, bandwidth Hz, gain dB) for five formants, alto-like voice.
VOWELS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "a": ((800, 80, 0), (1150, 90, -4), (2800, 120, -20), (3500, 130, -36), (4950, 140, -60)),
    "e": ((400, 60, 0), (1600, 80, -24), (2700, 120, -30), (3300, 150, -35), (4950, 200, -60)),
    "i": ((350, 50, 0), (1700, 100, -20), (2700, 120, -30), (3700, 150, -36), (4950, 200, -60)),
    "o": ((450, 70, 0), (800, 80, -9), (2830, 100, -16), (3500, 130, -28), (4950, 135, -55)),
    "u": ((325, 50, 0), (700, 60, -12), (2530, 170, -30), (3500, 180, -40), (4950, 200, -64)),
    # voiced consonant onsets: nasal murmur and lateral
    "m": ((250, 60, 0), (1200, 150, -28), (2300, 200, -34), (3400, 250, -45), (4950, 250, -60)),
    "l": ((360, 60, 0), (1300, 100, -15), (2700, 150, -26), (3400, 200, -36), (4950, 200, -60)),
}
CONSONANTS = ("", "", "m", "n", "l", "s", "t", "h")


@lru_cache(maxsize=64)
def _formant_bank(vowel: str, rate: int) -> tuple[tuple[np.ndarray, float], ...]:
    bank = []
    for freq, bw, gain_db in VOWELS[vowel]:
        if freq < 0.45 * rate:
            b, a = signal.iirpeak(freq, freq / bw, fs=rate)
            bank.append((signal.tf2sos(b, a), 10 ** (gain_db / 20.0)))
    return tuple(bank)


def formant_filter(source: np.ndarray, vowel: str, rate: int) -> np.ndarray:
    """Parallel bank of 2nd-order resonators shaping a glottal source into a vowel."""
    return sum(gain * signal.sosfilt(sos, source) for sos, gain in _formant_bank(vowel, rate))


def sing(
    notes: list[tuple[float, float, float]], n_total: int, rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Render a sung line: one syllable per (start_s, dur_s, midi) note.

    Source: band-limited sawtooth (glottal pulse train) with pitch scoop, delayed vibrato and jitter,
    tilted to about -12 dB/octave, plus breath noise; filtered by five formant resonators with a new
    vowel (and sometimes a consonant onset) per syllable, under a syllable envelope.
    """
    out = np.zeros(n_total)
    for start_s, dur_s, midi in notes:
        start = int(start_s * rate)
        if start >= n_total:
            continue
        vowel = "aeiou"[int(rng.integers(5))]
        consonant = CONSONANTS[int(rng.integers(len(CONSONANTS)))]
        n_on = int(dur_s * rate)
        env = envelope(n_on, rate, 0.04, 0.3, 0.8, 0.07)
        n = len(env)
        t = np.arange(n) / rate
        f0 = float(midi_hz(midi))
        scoop = -0.6 * np.exp(-t / 0.05)  # semitones
        vib_depth = 0.35 * np.clip((t - 0.18) / 0.25, 0.0, 1.0)
        vib = vib_depth * np.sin(2 * np.pi * (5.4 + 0.4 * rng.random()) * t + rng.random() * 6.28)
        knots = rng.standard_normal(int(n / rate * 20) + 2) * 0.15  # slow random pitch drift, semitones
        jitter = np.interp(t, np.arange(len(knots)) / 20.0, knots)
        freq = f0 * 2.0 ** ((scoop + vib + jitter) / 12.0)
        source = filt(saw(freq, n, rate, phase0=float(rng.random())), "lowpass", 700.0, rate, 1)
        breath = filt(rng.standard_normal(n), "bandpass", (1500.0, 7000.0), rate) * 0.03
        voiced = formant_filter(source + breath, vowel, rate)
        if consonant in ("m", "n", "l"):
            murmur = formant_filter(source, "m" if consonant in "mn" else "l", rate)
            fade = np.clip(t / 0.07, 0.0, 1.0)
            voiced = murmur * (1.0 - fade) * 0.7 + voiced * fade
        syllable = voiced * env
        if consonant in ("s", "t", "h"):  # unvoiced onset just before the vowel
            length = {"s": 0.07, "t": 0.015, "h": 0.05}[consonant]
            band = {"s": (4000.0, 10000.0), "t": (2500.0, 8000.0), "h": (800.0, 5000.0)}[consonant]
            m = min(int(length * rate), start)
            if m > 8:
                hiss = filt(rng.standard_normal(m), "bandpass", band, rate) * np.hanning(m)
                level = {"s": 0.25, "t": 0.35, "h": 0.1}[consonant] * np.max(np.abs(syllable))
                out[start - m : start] += level * hiss / (np.max(np.abs(hiss)) + 1e-12)
        end = min(n_total, start + n)
        out[start:end] += syllable[: end - start]
    return out

"""Deterministic synthetic bird calls (the embedded default data set, no download).

Each "species" is a parametric call pattern drawn from four families

- ``sweep``: a down- or up-chirp repeated a few times,
- ``trill``: fast frequency-modulated notes (a sinusoidal FM carrier gated into syllables),
- ``harmonic``: a harmonic stack (fundamental + overtones with decaying amplitude) with a slow glide,
- ``pulse``: a train of short broadband-ish clicks band-passed around a centre frequency,

with species-specific base pitch, tempo and shape. Every clip draws a random pitch shift, tempo change, onset
time and loudness, and the call sits over coloured background noise. Everything comes from a numpy generator
seeded by (seed, split, index), so the data set is identical on every machine.
"""
from __future__ import annotations

import numpy as np

FAMILIES = ("sweep", "trill", "harmonic", "pulse")


def species_table(num_species: int, seed: int = 0) -> list[dict]:
    """Parameters of each species; species i uses family i mod 4 with its own pitch / tempo / shape."""
    rng = np.random.default_rng(10_000 + seed)
    table = []
    for i in range(num_species):
        fam = FAMILIES[i % len(FAMILIES)]
        table.append({
            "family": fam,
            "f0": float(rng.uniform(1500, 7000)),  # base frequency (Hz)
            "span": float(rng.uniform(0.3, 1.2)) * (1 if rng.random() < 0.5 else -1),  # sweep extent (octaves)
            "rate": float(rng.uniform(4, 14)),  # notes / syllables per second
            "note": float(rng.uniform(0.03, 0.12)),  # note duration (s)
            "fm": float(rng.uniform(20, 60)),  # trill FM rate (Hz)
            "harmonics": int(rng.integers(2, 5)),
        })
    return table


def _envelope(n: int, sr: int, attack: float = 0.004) -> np.ndarray:
    a = max(1, min(n // 2, int(attack * sr)))
    env = np.ones(n)
    env[:a] = np.linspace(0, 1, a)
    env[-a:] = np.linspace(1, 0, a)
    return env


def _note(sp: dict, dur: float, f0: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = max(8, int(dur * sr))
    t = np.arange(n) / sr
    fam = sp["family"]
    if fam == "sweep":
        f = f0 * 2 ** (sp["span"] * t / dur)
        phase = 2 * np.pi * np.cumsum(f) / sr
        x = np.sin(phase)
    elif fam == "trill":
        f = f0 * (1 + 0.15 * np.sin(2 * np.pi * sp["fm"] * t))
        x = np.sin(2 * np.pi * np.cumsum(f) / sr)
    elif fam == "harmonic":
        f = f0 * 0.5 * 2 ** (0.2 * sp["span"] * t / dur)
        phase = 2 * np.pi * np.cumsum(f) / sr
        x = sum((0.7 ** k) * np.sin((k + 1) * phase) for k in range(sp["harmonics"]))
    else:  # pulse: a short click train, each click a damped resonance at f0
        x = np.zeros(n)
        period = max(1, int(sr / (sp["fm"] * 4)))
        click = np.exp(-np.arange(period) / (0.0015 * sr)) * np.sin(2 * np.pi * f0 * np.arange(period) / sr)
        for s in range(0, n - period, period):
            x[s:s + period] += click
    return x * _envelope(n, sr)


def synth_call(sp: dict, seconds: float, sr: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """One clip: a bout of notes of species ``sp`` with random pitch / tempo / onset, over coloured noise."""
    n = int(seconds * sr)
    out = np.zeros(n)
    pitch = 2 ** rng.uniform(-0.25, 0.25)  # +- a quarter octave
    tempo = 2 ** rng.uniform(-0.3, 0.3)
    f0 = min(sp["f0"] * pitch, 0.4 * sr)
    rate = sp["rate"] * tempo
    note = sp["note"] / tempo
    start = rng.uniform(0.0, 0.4) * seconds
    length = rng.uniform(0.4, 0.9) * seconds
    t = start
    while t + note < min(seconds, start + length):
        x = _note(sp, note, f0 * 2 ** rng.normal(0, 0.03), sr, rng)
        s = int(t * sr)
        e = min(n, s + len(x))
        out[s:e] += x[: e - s] * rng.uniform(0.6, 1.0)
        t += 1.0 / rate
    out *= 10 ** rng.uniform(-0.5, 0.0)
    white = rng.standard_normal(n)
    brown = np.cumsum(white)
    c = np.concatenate([[0.0], np.cumsum(np.pad(brown, 200, mode="edge"))])
    brown -= (c[401:] - c[:-401]) / 401  # remove the drift (moving average): low-frequency rumble remains
    bg = 0.6 * white / (np.abs(white).max() + 1e-9) + 0.4 * brown / (np.abs(brown).max() + 1e-9)
    return (out + noise * rng.uniform(0.5, 1.5) * bg).astype(np.float32)


def make_clip(index: int, split: str, num_species: int, seconds: float, sr: int, seed: int = 0,
              noise: float = 0.05, multilabel: bool = False) -> tuple[np.ndarray, list[int]]:
    """Deterministic clip ``index`` of ``split``: (waveform, species ids present)."""
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
    table = species_table(num_species, seed)
    first = index % num_species
    present = [first]
    if multilabel and rng.random() < 0.5:
        other = int(rng.integers(0, num_species - 1))
        present.append(other + (other >= first))
    wav = sum(synth_call(table[s], seconds, sr, rng, noise=noise if j == 0 else 0.0) for j, s in enumerate(present))
    wav = wav / max(1.0, float(np.abs(wav).max()) / 0.95)
    return wav.astype(np.float32), sorted(present)

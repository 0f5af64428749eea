"""Deterministic synthetic talking faces: a face video and a voice that belong together (HiCMAE's embedded data).

Each clip shows one subject (a fixed identity of :func:`mae_core.data.faces.subject_traits`, rendered by mae-core's
procedural :func:`~mae_core.data.faces.render_faces`) saying a few syllables with one of :data:`EMOTIONS`:

- **mouth follows the voice**: each video frame's jaw opening (the renderer's AU26) is the syllable envelope of the
  audio over that frame's 1 / fps window, so the two streams are synchronised;
- **face expression** carries the emotion (:data:`FACE`: brow raise AU2, brow lowerer AU4, nose wrinkle AU9, lip
  corners AU12, negative = corners down) at a per-clip intensity ``s_v``;
- **voice prosody** carries it too (:data:`VOICE`: pitch level relative to the speaker, pitch slope over the clip,
  syllable rate, loudness and spectral tilt), interpolated from neutral at an independent intensity ``s_a``. The
  speaker's own pitch (90-240 Hz) and per-clip jitter blur the pitch cue, so neither modality alone is certain.

Voices are harmonic stacks on a pitch contour with vowel formants that change per syllable, aspiration noise and
background noise. Nuisances in the video: position, scale, background colour, lighting, a slow head drift, blinks
and pixel noise. Train and test splits hold different subjects (the test subjects are unseen). Everything comes
from numpy / torch generators seeded by (seed, split), identical on every machine.
"""
from __future__ import annotations

import numpy as np
import torch

from mae_core.data.faces import AUS, render_faces, subject_traits

EMOTIONS = ("neutral", "happy", "angry", "sad")
# full-intensity action units of each emotion (order of mae_core.data.faces.AUS; AU26 is the mouth, AU43 blinks)
FACE = {"neutral": {}, "happy": {"AU12": 1.0, "AU2": 0.25},
        "angry": {"AU4": 1.0, "AU9": 0.6, "AU12": -0.3}, "sad": {"AU12": -0.9, "AU2": 0.45}}
# (pitch factor, pitch slope in octaves over the clip, syllables per second, loudness, spectral tilt)
VOICE = {"neutral": (1.0, 0.0, 4.0, 0.5, 1.0), "happy": (1.35, 0.45, 5.0, 0.75, 0.85),
         "angry": (1.2, -0.15, 6.0, 1.0, 0.55), "sad": (0.8, -0.4, 2.8, 0.25, 1.45)}
VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))


def speaker_pitch(n: int, seed: int) -> np.ndarray:
    """Base pitch (Hz) of ``n`` subjects, fixed per subject."""
    return np.random.default_rng([seed, 23]).uniform(90.0, 240.0, n)


def syllables(seconds: float, rate: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """(onset, duration) of each syllable: onsets every 1 / rate s with +-20 % jitter."""
    out, t = [], rng.uniform(0.0, 0.15)
    while t < seconds - 0.05:
        dur = min(rng.uniform(0.5, 0.7) / rate, seconds - t)
        out.append((t, dur))
        t += rng.uniform(0.8, 1.2) / rate
    return out


def voice(emotion: str, strength: float, f0_speaker: float, seconds: float, sr: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(waveform (N,) float32, syllable envelope (N,) in [0, 1]) of one utterance."""
    neutral, emo = np.array(VOICE["neutral"]), np.array(VOICE[emotion])
    factor, slope, rate, loud, tilt = neutral + strength * (emo - neutral)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    env = np.zeros(n)
    formants = np.zeros((n, 3))
    for onset, dur in syllables(seconds, rate * 2 ** rng.normal(0, 0.1), rng):
        a, b = int(onset * sr), min(n, int((onset + dur) * sr))
        env[a:b] = np.maximum(env[a:b], np.sin(np.pi * np.arange(b - a) / max(1, b - a)) ** 2)
        formants[a:b] = np.array(VOWELS[rng.integers(len(VOWELS))]) * rng.uniform(0.92, 1.08)
    formants[formants[:, 0] == 0] = VOWELS[0]
    f0 = (f0_speaker * factor * 2 ** rng.normal(0, 0.08) * 2 ** (slope * (t / seconds - 0.5))
          * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = np.zeros(n)
    for k in range(1, int(min(5000.0, 0.45 * sr) / f0.min()) + 1):
        fk = k * f0
        gain = sum(1.0 / (1.0 + ((fk - formants[:, j]) / (60.0 + 40 * j)) ** 2) for j in range(3))
        out += (fk < min(5000.0, 0.45 * sr)) * gain * k ** (-tilt) * np.sin(k * phase)
    out = out / (np.abs(out).max() + 1e-9)
    breath = rng.standard_normal(n) * 0.05 * (1.5 - tilt / 1.5)
    speech = (out + breath) * env * loud * 10 ** rng.uniform(-0.1, 0.1)
    wav = speech + rng.uniform(0.005, 0.02) * rng.standard_normal(n)
    return (wav / max(1.0, np.abs(wav).max() / 0.95)).astype(np.float32), env


def mouth_opening(env: np.ndarray, num_frames: int) -> np.ndarray:
    """(num_frames,) jaw opening: the mean syllable envelope over each frame's window."""
    return np.array([w.mean() for w in np.array_split(env, num_frames)])


def talking_faces(num_clips: int, split: str, num_frames: int, image_size: int, seconds: float, sr: int,
                  subjects: tuple[int, int] = (16, 8), seed: int = 0, chunk: int = 512):
    """One split: (video uint8 (N, 3, T, S, S), waveforms (N, samples) float32, emotion (N,) long, subject (N,)).

    Emotions cycle over the clips (balanced); train clips use the first ``subjects[0]`` identities, test clips the
    next ``subjects[1]`` (unseen)."""
    test = split != "train"
    first, count = (subjects[0], subjects[1]) if test else (0, subjects[0])
    rng = np.random.default_rng([seed, 31, int(test)])
    pitch = speaker_pitch(sum(subjects), seed)
    traits_all = subject_traits(sum(subjects), seed)
    labels = np.arange(num_clips) % len(EMOTIONS)
    subj = first + rng.integers(0, count, num_clips)
    s_v, s_a = rng.uniform(0.15, 1.0, num_clips), rng.uniform(0.15, 1.0, num_clips)
    waves, aus = [], np.zeros((num_clips, num_frames, len(AUS)))
    for i in range(num_clips):
        emo = EMOTIONS[labels[i]]
        w, env = voice(emo, s_a[i], pitch[subj[i]], seconds, sr, rng)
        waves.append(w)
        for au, v in FACE[emo].items():
            aus[i, :, AUS.index(au)] = s_v[i] * v
        aus[i, :, AUS.index("AU26")] = np.clip(1.1 * mouth_opening(env, num_frames), 0, 1)
        blink = rng.integers(-num_frames, num_frames)  # about half of the clips blink once
        if 0 <= blink < num_frames:
            aus[i, blink, AUS.index("AU43")] = 1.0
    # per clip nuisances, then per frame head drift
    shift = rng.uniform(-0.06, 0.06, (num_clips, 1, 2)) + 0.02 * np.sin(
        np.linspace(0, 2 * np.pi, num_frames)[None, :, None] + rng.uniform(0, 2 * np.pi, (num_clips, 1, 2)))
    per_clip = {"scale": rng.uniform(0.93, 1.07, num_clips), "light": rng.uniform(0, 2 * np.pi, num_clips)}
    background = rng.uniform(0.2, 0.8, (num_clips, 3))
    g = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    frames = []
    idx = np.repeat(np.arange(num_clips), num_frames)  # clip of every frame
    for a in range(0, len(idx), chunk):
        ii = idx[a:a + chunk]
        tr = {k: v[torch.from_numpy(subj[ii])] for k, v in traits_all.items()}
        img = render_faces(tr, torch.from_numpy(aus.reshape(-1, len(AUS))[a:a + chunk]).float(), image_size,
                           shift=torch.from_numpy(shift.reshape(-1, 2)[a:a + chunk]).float(),
                           scale=torch.from_numpy(per_clip["scale"][ii]).float(),
                           background=torch.from_numpy(background[ii]).float(),
                           light=torch.from_numpy(per_clip["light"][ii]).float(), noise=0.02, generator=g)
        frames.append((img * 255).round().to(torch.uint8))
    video = torch.cat(frames).reshape(num_clips, num_frames, 3, image_size, image_size).permute(0, 2, 1, 3, 4)
    return (video.contiguous(), torch.from_numpy(np.stack(waves)), torch.from_numpy(labels).long(),
            torch.from_numpy(subj).long())

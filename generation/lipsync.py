"""Lip sync from the audio alone: per-video-frame mouth opening and lip spread from the speech signal.

piper writes no phoneme timings, so this is the "audio envelope" path: it needs nothing but the samples and
works the same for any engine or a recorded voice. Per video frame:

- ``open`` (0..1): the RMS of a ``WINDOW_S`` (40 ms) rectangular window centred on the middle of the frame's
  display interval, in dB, mapped linearly from a noise floor to a loud level. Both come from the clip itself
  (floor: the 10th percentile of frame levels, but at most ``DYNAMIC_RANGE_DB`` below the loud level; loud:
  the 95th percentile), so a quiet and a loud recording of the same words move the mouth alike. Then a
  one-pole smoother with a fast attack (``ATTACK_S``: the mouth opens as fast as a plosive releases) and a
  slower release (``RELEASE_S``: jaws close more slowly, and it keeps the mouth from fluttering at 25 fps).
- ``spread`` (-1..1): where the energy of the spectrum lies. Front vowels ("ee") have a high second formant
  (1.5-4 kHz), rounded back vowels ("oo") a low one (F2 under 1 kHz), so the log ratio of energy in
  ``HIGH_BAND`` to energy in ``LOW_BAND``, standardised over the clip's voiced frames and squashed by tanh,
  says spread (positive) or rounded (negative). It is 0 on silent frames and fades in with the opening.
  Standardising per clip means each clip uses the whole range: it describes relative lip shape, not a
  calibrated one.
- A visual lead: mouths start moving about 40 ms before the sound (Chandrasekaran et al. 2009), so frame
  ``k`` shows the analysis of frame ``k + round(LEAD_S * fps)`` (one frame at 25 fps).

Pure numpy; a 10 s clip takes a few milliseconds.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from affectlens.errors import AffectLensError

logger = logging.getLogger(__name__)

WINDOW_S: Final[float] = 0.040
LEAD_S: Final[float] = 0.040
ATTACK_S: Final[float] = 0.020
RELEASE_S: Final[float] = 0.080
FLOOR_PERCENTILE: Final[float] = 10.0
LOUD_PERCENTILE: Final[float] = 95.0
DYNAMIC_RANGE_DB: Final[float] = 30.0
#: Below this RMS (about -80 dBFS) a frame is silence whatever the clip's levels.
ABSOLUTE_FLOOR_RMS: Final[float] = 1e-4
#: Frames at or above this opening count as voiced for the spread statistics; spread fades in up to it.
VOICED_OPEN: Final[float] = 0.3
LOW_BAND: Final[tuple[float, float]] = (300.0, 1000.0)
HIGH_BAND: Final[tuple[float, float]] = (1500.0, 4000.0)


@dataclass(frozen=True)
class MouthCurves:
    """Mouth movement per video frame (all float32 arrays of the same length, one value per frame at ``fps``).

    ``open``: jaw/lip opening, 0 (closed) to 1 (the clip's loud speech). ``spread``: -1 (rounded, "oo") to 1
    (spread, "ee"), 0 when silent. ``envelope``: the RMS per frame the opening came from (the audio's own units,
    unsmoothed, with the same lead)."""

    open: np.ndarray
    spread: np.ndarray
    envelope: np.ndarray
    fps: float

    def __len__(self) -> int:
        return len(self.open)


def frame_count(num_samples: int, sample_rate: float, fps: float) -> int:
    """Video frames needed to cover ``num_samples`` of audio (at least 1)."""
    return max(1, math.ceil(num_samples * fps / sample_rate - 1e-9))


def _windows(samples: np.ndarray, sample_rate: float, fps: float, count: int) -> np.ndarray:
    """``count`` x ``win`` windows centred on the middle of each frame's display interval, zero-padded."""
    win = max(2, round(WINDOW_S * sample_rate))
    centres = np.round((np.arange(count) + 0.5) / fps * sample_rate).astype(np.int64)
    starts = centres - win // 2
    pad_left = max(0, -int(starts.min()))
    pad_right = max(0, int(starts.max()) + win - len(samples))
    padded = np.pad(samples, (pad_left, pad_right))
    index = (starts + pad_left)[:, None] + np.arange(win)[None, :]
    return padded[index]


def _smooth_attack_release(values: np.ndarray, fps: float) -> np.ndarray:
    attack = 1.0 - math.exp(-1.0 / (fps * ATTACK_S))
    release = 1.0 - math.exp(-1.0 / (fps * RELEASE_S))
    out = np.empty_like(values)
    level = 0.0
    for k, x in enumerate(values):
        level += (attack if x > level else release) * (x - level)
        out[k] = level
    return out


def _opening(rms: np.ndarray) -> np.ndarray:
    """RMS per frame -> raw opening in 0..1 against the clip's own floor and loud levels."""
    db = 20.0 * np.log10(np.maximum(rms, 1e-10))
    audible = rms > ABSOLUTE_FLOOR_RMS
    if not audible.any():
        return np.zeros_like(rms)
    loud = float(np.percentile(db[audible], LOUD_PERCENTILE))
    floor = max(float(np.percentile(db, FLOOR_PERCENTILE)), loud - DYNAMIC_RANGE_DB)
    if loud - floor < 1.0:  # a flat signal (a steady tone): open where audible
        return audible.astype(np.float64)
    return np.clip((db - floor) / (loud - floor), 0.0, 1.0) * audible


def _spread(windows: np.ndarray, sample_rate: float, weight: np.ndarray) -> np.ndarray:
    """Windows -> spread in -1..1 from the high/low band energy ratio, gated by ``weight`` (0..1)."""
    spectrum = np.abs(np.fft.rfft(windows * np.hanning(windows.shape[1]), axis=1)) ** 2
    freqs = np.fft.rfftfreq(windows.shape[1], d=1.0 / sample_rate)
    low = (freqs >= LOW_BAND[0]) & (freqs < LOW_BAND[1])
    high = (freqs >= HIGH_BAND[0]) & (freqs < HIGH_BAND[1])
    if not low.any() or not high.any():
        return np.zeros(len(windows))
    tiny = 1e-12 * windows.shape[1]
    ratio = np.log(spectrum[:, high].sum(axis=1) + tiny) - np.log(spectrum[:, low].sum(axis=1) + tiny)
    voiced = weight >= 1.0
    if voiced.sum() < 2:
        return np.zeros(len(windows))
    mean, std = float(ratio[voiced].mean()), float(ratio[voiced].std())
    z = (ratio - mean) / max(std, 1e-3)
    return np.tanh(z) * weight


def mouth_curves(
    samples: np.ndarray, sample_rate: float, fps: float = 25.0, num_frames: int | None = None
) -> MouthCurves:
    """Mouth opening and spread per video frame from mono speech ``samples`` (float, any level).

    ``num_frames`` defaults to enough frames to cover the audio (``frame_count``); more frames see silence.

    Raises:
        AffectLensError: samples not 1-D finite numbers, or a sample rate, fps or frame count that is not positive.
    """
    data = np.asarray(samples)
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.number):
        raise AffectLensError(f"lip sync needs 1-D mono samples, got an array of shape {data.shape} ({data.dtype})")
    data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise AffectLensError("lip sync samples contain NaN or infinite values")
    if not sample_rate > 0 or not fps > 0:
        raise AffectLensError(f"sample rate and fps must be positive, got {sample_rate} and {fps}")
    count = frame_count(len(data), sample_rate, fps) if num_frames is None else int(num_frames)
    if count < 1:
        raise AffectLensError(f"num_frames must be at least 1, got {num_frames}")
    lead = max(0, round(LEAD_S * fps))
    windows = _windows(data, sample_rate, fps, count + lead)
    rms = np.sqrt(np.mean(windows**2, axis=1))
    raw_open = _opening(rms)
    opened = _smooth_attack_release(raw_open, fps)
    spread = _spread(windows, sample_rate, np.clip(raw_open / VOICED_OPEN, 0.0, 1.0))
    spread = np.convolve(np.pad(spread, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")  # tame frame jitter
    spread *= raw_open > 0  # silent frames stay exactly 0 after the smoothing
    return MouthCurves(
        open=opened[lead:].astype(np.float32),
        spread=np.clip(spread[lead:], -1.0, 1.0).astype(np.float32),
        envelope=rms[lead:].astype(np.float32),
        fps=float(fps),
    )


def envelope_correlation(open_curve: np.ndarray, envelope: np.ndarray) -> float:
    """Pearson r between an opening curve and an envelope (same length); NaN-safe: frames where either is NaN
    are dropped, and a constant input gives 0.0."""
    a = np.asarray(open_curve, dtype=np.float64).ravel()
    b = np.asarray(envelope, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise AffectLensError(f"curves of different lengths: {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / denom) if denom > 0 else 0.0

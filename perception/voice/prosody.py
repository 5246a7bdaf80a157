"""Prosody of a speech segment in numpy: a YIN pitch tracker, energy, syllable rate, pauses and voice quality.

``ProsodyAnalyzer`` gives the readable ``affectlens.types.Prosody``; ``voice_statistics`` gives 28 summary
statistics in the spirit of eGeMAPS (pitch, loudness, HNR, rhythm and spectral balance) for classifiers.

Everything works on 16 kHz mono float32 in [-1, 1] and is computed on 10 ms frames. Pitch comes from YIN
(de Cheveigné & Kawahara 2002) on 40 ms windows between ``fmin`` and ``fmax``; syllables are peaks of the
smoothed intensity envelope that stand 2 dB above the dips around them and fall on voiced frames (after
de Jong & Wempe 2009). Jitter, shimmer and HNR are frame-level proxies, not Praat's cycle-level measures:
jitter is the mean change of the pitch period between consecutive voiced frames relative to the mean
period, shimmer the same for the frames' peak amplitude, and HNR ``10 log10(r / (1 - r))`` from the
normalised autocorrelation ``r`` at the pitch period, averaged over voiced frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from affectlens.types import Prosody
from perception.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

HOP = SAMPLE_RATE // 100  # 10 ms
#: Floor for energies of digital silence, in dBFS.
SILENCE_DB = -120.0


@dataclass(frozen=True)
class PitchTrack:
    """Frame-level analysis, one row per 10 ms hop (frame ``i`` starts at ``i * 0.01`` s).

    ``f0`` in Hz (NaN where unvoiced); ``periodicity`` the normalised autocorrelation at the chosen period
    (0-1); ``rms_db`` and ``peak`` the RMS in dBFS and the peak absolute amplitude of the analysis window.
    """

    f0: np.ndarray
    periodicity: np.ndarray
    rms_db: np.ndarray
    peak: np.ndarray

    @property
    def voiced(self) -> np.ndarray:
        return ~np.isnan(self.f0)


def _db(values: np.ndarray | float) -> np.ndarray:
    return 20.0 * np.log10(np.maximum(np.asarray(values, np.float64), 10 ** (SILENCE_DB / 20)))


def track_pitch(
    audio: np.ndarray,
    fmin: float = 60.0,
    fmax: float = 500.0,
    window_ms: float = 40.0,
    threshold: float = 0.15,
    voicing: float = 0.3,
    gate_db: float = 35.0,
    block: int = 256,
) -> PitchTrack:
    """YIN pitch track of 16 kHz mono ``audio`` (shape ``(n,)``), 10 ms hop.

    A frame is voiced when its cumulative-mean-normalised difference falls below ``voicing`` at the chosen
    lag and its RMS is within ``gate_db`` of the loudest frame (and above -60 dBFS). ``threshold`` is YIN's
    absolute threshold for picking the first dip. Frames are processed ``block`` at a time to bound memory.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    width = int(SAMPLE_RATE * window_ms / 1000)
    tau_min, tau_max = max(2, int(SAMPLE_RATE / fmax)), int(np.ceil(SAMPLE_RATE / fmin))
    span = width + tau_max
    n_frames = max(1, int(np.ceil(len(audio) / HOP)))
    padded = np.zeros((n_frames - 1) * HOP + span, np.float32)
    padded[: len(audio)] = audio
    n_fft = 1 << int(np.ceil(np.log2(span + width)))
    f0 = np.full(n_frames, np.nan)
    periodicity = np.zeros(n_frames)
    rms_db = np.zeros(n_frames)
    peak = np.zeros(n_frames)
    dmin = np.ones(n_frames)
    lags = np.arange(tau_max + 1)
    for lo in range(0, n_frames, block):
        hi = min(n_frames, lo + block)
        frames = np.lib.stride_tricks.sliding_window_view(padded, span)[lo * HOP : (hi - 1) * HOP + 1 : HOP]
        frames = frames.astype(np.float64)
        head = frames[:, :width]
        corr = np.fft.irfft(np.fft.rfft(frames, n_fft) * np.conj(np.fft.rfft(head, n_fft)), n_fft)[:, : tau_max + 1]
        csum = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames**2, axis=1)], axis=1)
        e0 = csum[:, width]
        e_tau = csum[:, lags + width] - csum[:, lags]
        diff = np.maximum(e0[:, None] + e_tau - 2 * corr, 0.0)
        diff[:, 0] = 0.0
        cum = np.cumsum(diff[:, 1:], axis=1)
        cmnd = np.ones_like(diff)
        cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(cum, 1e-12)
        search = cmnd[:, tau_min : tau_max + 1]
        below = search < threshold
        first = np.where(below.any(axis=1), below.argmax(axis=1), search.argmin(axis=1))
        for k, start in enumerate(first):  # walk down to the bottom of the first dip
            row = search[k]
            while start + 1 < len(row) and row[start + 1] < row[start]:
                start += 1
            first[k] = start
        tau = first + tau_min
        rows = np.arange(len(frames))
        best = cmnd[rows, tau]
        left, right = cmnd[rows, np.maximum(tau - 1, 1)], cmnd[rows, np.minimum(tau + 1, tau_max)]
        denom = left - 2 * best + right
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
        tau_f = tau + np.clip(shift, -1, 1)
        energy = e0 / width
        f0[lo:hi] = SAMPLE_RATE / tau_f
        dmin[lo:hi] = best
        periodicity[lo:hi] = np.clip(corr[rows, tau] / np.sqrt(np.maximum(e0 * e_tau[rows, tau], 1e-20)), 0.0, 1.0)
        rms_db[lo:hi] = _db(np.sqrt(energy))
        peak[lo:hi] = np.abs(head).max(axis=1)
    loud = (rms_db > rms_db.max() - gate_db) & (rms_db > -60.0)
    voiced = (dmin < voicing) & loud
    f0[~voiced] = np.nan
    return PitchTrack(f0=f0, periodicity=periodicity, rms_db=rms_db, peak=peak)


def syllable_nuclei(
    audio: np.ndarray, voiced: np.ndarray | None = None, min_dip_db: float = 2.0, floor_db: float = 25.0
) -> np.ndarray:
    """Frame indices (10 ms hops) of syllable nuclei in 16 kHz mono ``audio``.

    Intensity is the RMS of 30 ms windows in dB, smoothed over 50 ms; a nucleus is a local maximum within
    ``floor_db`` of the loudest frame and above the median, separated from the previous nucleus by a dip
    of at least ``min_dip_db`` (otherwise the louder of the two is kept), and, when ``voiced`` (per frame)
    is given, on a voiced frame.
    """
    audio = np.asarray(audio, np.float32).reshape(-1)
    width = int(0.03 * SAMPLE_RATE)
    n_frames = max(1, int(np.ceil(len(audio) / HOP)))
    padded = np.zeros((n_frames - 1) * HOP + width, np.float32)
    padded[: len(audio)] = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, width)[::HOP][:n_frames]
    level = _db(np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)))
    level = np.convolve(np.pad(level, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    if len(level) < 3:
        return np.zeros(0, np.int64)
    floor = max(float(level.max()) - floor_db, float(np.median(level)))
    is_peak = (level[1:-1] > level[:-2]) & (level[1:-1] >= level[2:]) & (level[1:-1] > floor)
    candidates = np.flatnonzero(is_peak) + 1
    kept: list[int] = []
    for idx in candidates:
        if not kept:
            kept.append(int(idx))
            continue
        dip = float(level[kept[-1] : idx + 1].min())
        if min(level[kept[-1]], level[idx]) - dip >= min_dip_db:
            kept.append(int(idx))
        elif level[idx] > level[kept[-1]]:
            kept[-1] = int(idx)
    nuclei = np.array(kept, np.int64)
    if voiced is not None and len(nuclei):
        nuclei = nuclei[voiced[np.minimum(nuclei, len(voiced) - 1)]]
    return nuclei


def _relative_change(values: np.ndarray, voiced: np.ndarray) -> float | None:
    pairs = voiced[:-1] & voiced[1:]
    if not pairs.any():
        return None
    return float(np.abs(np.diff(values))[pairs].mean() / values[voiced].mean())


class ProsodyAnalyzer:
    """``analyzer(audio16k) -> Prosody`` for one speech segment (16 kHz mono float32, shape ``(n,)``)."""

    name = "yin-prosody"

    def __init__(self, fmin: float = 60.0, fmax: float = 500.0) -> None:
        if not 0 < fmin < fmax <= SAMPLE_RATE / 4:
            raise ValueError(f"need 0 < fmin < fmax <= {SAMPLE_RATE / 4}, got {fmin}, {fmax}")
        self.fmin, self.fmax = fmin, fmax

    def __call__(self, audio: np.ndarray) -> Prosody:
        audio = np.asarray(audio, np.float32).reshape(-1)
        if len(audio) == 0:
            raise ValueError("empty audio")
        track = track_pitch(audio, self.fmin, self.fmax)
        voiced = track.voiced
        duration = len(audio) / SAMPLE_RATE
        energy = float(_db(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))
        rate = len(syllable_nuclei(audio, voiced)) / duration
        pause_ratio = float(1.0 - voiced.mean())
        if not voiced.any():
            return Prosody(None, None, energy, rate, pause_ratio)
        f0 = track.f0[voiced]
        low, high = np.percentile(f0, [10, 90])
        period = np.where(voiced, 1.0 / np.where(voiced, track.f0, 1.0), 0.0)
        r = np.clip(track.periodicity[voiced], 1e-3, 1 - 1e-3)
        return Prosody(
            pitch_mean=float(f0.mean()),
            pitch_range=float(12.0 * np.log2(high / low)),
            energy=energy,
            speaking_rate=float(rate),
            pause_ratio=pause_ratio,
            jitter=_relative_change(period, voiced),
            shimmer=_relative_change(track.peak, voiced),
            hnr=float(np.mean(10.0 * np.log10(r / (1.0 - r)))),
        )


#: What ``voice_statistics`` returns, in order. Pitch in octaves (log2 Hz), loudness in dBFS, HNR in dB,
#: durations in seconds, spectral balance in dB (alpha ratio: 50-1000 Hz over 1-5 kHz; Hammarberg: peak
#: 0-2 kHz over peak 2-5 kHz), centroid in kHz, slopes in dB/kHz, flux in dB (RMS change between frames).
VOICE_STATISTICS: tuple[str, ...] = (
    "pitch_mean", "pitch_std", "pitch_p20", "pitch_p50", "pitch_p80", "pitch_p20_p80", "pitch_slope",
    "loudness_mean", "loudness_std", "loudness_p20", "loudness_p80", "loudness_range_all_frames",
    "hnr_mean", "hnr_std",
    "voiced_runs_per_s", "voiced_run_mean", "unvoiced_run_mean", "voiced_fraction",
    "alpha_ratio_mean", "alpha_ratio_std", "hammarberg_mean", "hammarberg_std",
    "centroid_mean", "centroid_std", "slope_0_500", "slope_500_1500", "flux_mean", "flux_std",
)  # fmt: skip


def _run_lengths(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (in frames) of the runs of True and of False in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    on = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    edges = np.diff(np.concatenate([[0], (~mask).astype(np.int8), [0]]))
    off = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return on, off


def voice_statistics(audio: np.ndarray, track: PitchTrack | None = None) -> np.ndarray:
    """``(len(VOICE_STATISTICS),)`` float32 summary of 16 kHz mono ``audio``; pitch entries are 0 when nothing
    is voiced, and spectral ones use every frame then. ``track`` reuses a ``track_pitch`` result."""
    audio = np.asarray(audio, np.float32).reshape(-1)
    track = track if track is not None else track_pitch(audio)
    voiced = track.voiced
    duration = max(len(audio), 1) / SAMPLE_RATE
    if voiced.any():
        octaves = np.log2(track.f0[voiced])
        p20, p50, p80 = np.percentile(octaves, [20, 50, 80])
        slope = float(np.abs(np.diff(12 * octaves)).mean()) if len(octaves) > 1 else 0.0
        pitch = [octaves.mean(), octaves.std(), p20, p50, p80, p80 - p20, slope]
    else:
        pitch = [0.0] * 7
    level = track.rms_db[voiced] if voiced.any() else track.rms_db
    all_p20, all_p80 = np.percentile(track.rms_db, [20, 80])
    loudness = [level.mean(), level.std(), *np.percentile(level, [20, 80]), all_p80 - all_p20]
    r = np.clip(track.periodicity[voiced] if voiced.any() else np.zeros(1), 1e-3, 1 - 1e-3)
    hnr = 10.0 * np.log10(r / (1.0 - r))
    on, off = _run_lengths(voiced)
    rhythm = [
        len(on) / duration,
        on.mean() * HOP / SAMPLE_RATE if len(on) else 0.0,
        off.mean() * HOP / SAMPLE_RATE if len(off) else 0.0,
        float(voiced.mean()),
    ]
    return np.nan_to_num(
        np.array([*pitch, *loudness, hnr.mean(), hnr.std(), *rhythm, *_spectral_balance(audio, voiced)], np.float32)
    )


def _spectral_balance(audio: np.ndarray, voiced: np.ndarray, n_fft: int = 400) -> list[float]:
    """Alpha ratio, Hammarberg index, centroid, two slopes and flux over 25 ms Hann frames (voiced ones if any)."""
    starts = np.flatnonzero(voiced) * HOP if voiced.any() else np.arange(len(voiced)) * HOP
    padded = np.zeros(max(len(audio), int(starts.max(initial=0)) + n_fft), np.float32)
    padded[: len(audio)] = audio
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[starts] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    freq = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)

    def band(lo: float, hi: float) -> np.ndarray:
        return power[:, (freq >= lo) & (freq < hi)]

    alpha = 10 * np.log10(band(50, 1000).sum(1) / band(1000, 5000).sum(1))
    hammarberg = 10 * np.log10(band(0, 2000).max(1) / band(2000, 5000).max(1))
    centroid = (power * freq).sum(1) / power.sum(1) / 1000
    level = 10 * np.log10(power)

    def slope(lo: float, hi: float) -> float:
        keep = (freq >= lo) & (freq < hi)
        x = freq[keep] - freq[keep].mean()
        return float(((level[:, keep] * x).sum(1) / (x**2).sum()).mean() * 1000)

    flux = np.sqrt((np.diff(level, axis=0) ** 2).mean(1)) if len(level) > 1 else np.zeros(1)
    return [
        alpha.mean(), alpha.std(), hammarberg.mean(), hammarberg.std(), centroid.mean(), centroid.std(),
        slope(0, 500), slope(500, 1500), flux.mean(), flux.std(),
    ]  # fmt: skip


def analyze_prosody(audio: np.ndarray) -> Prosody:
    """Prosody of one 16 kHz mono segment with the default settings (see ``ProsodyAnalyzer``)."""
    return ProsodyAnalyzer()(audio)

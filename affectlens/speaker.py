"""Active speaker: which face track speaks each utterance, from mouth movement inside it against silence.

Method. Per face track, the mouth opening ``m`` (``faces`` column ``mouth_open``: the inner-lip gap over the
interocular distance, unclipped, from the face mesh; tables without it fall back to ``AU25`` times
``AU25_STEP``) is turned into frame-to-frame movement ``|m[k] - m[k-1]|`` over consecutive analysed frames
(a gap of more than 1.5 frame steps breaks the chain), placed at the midpoint of the two frames. For an
utterance ``u`` and a track ``j``:

* ``movement``: the mean movement of ``j`` inside ``u`` (padded by half a frame step on each side);
* ``baseline``: the mean movement of ``j`` outside every utterance (padded by one step), i.e. how much this
  face's mouth moves while nobody speaks; never below ``floor`` (mesh jitter), and ``floor`` alone when the
  track has fewer than ``min_baseline`` silent movements (someone who is on screen only while people talk);
* ``presence``: the share of ``u``'s duration in which ``j`` is seen with a mouth measure, i.e. its frames
  inside ``u`` over ``(end - start) / step``, at most 1;
* ``score = presence * max(0, (movement - baseline) / (movement + baseline))`` in [0, 1): 0 for a mouth that
  moves no more than it does in silence, 0.5 for three times as much, never above ``presence``.

The best track speaks ``u`` when its score is at least ``threshold`` and beats the runner-up by ``margin``;
otherwise the speaker is unknown (``None``): an off-screen narrator (every mouth still), two faces that move
alike (a tie, or people talking over each other), or faces seen too briefly. A track needs
``min_movements`` movements inside ``u`` to be scored at all.

Limits. Speech moves the mouth at the syllable rate, about 4-5 Hz, so sampling it needs at least
``MIN_FPS`` = 10 analysed frames per second (Nyquist), and 15-25 fps to follow it. At the default 5 fps each
syllable gives at most one frame: the movement measure still tells a talking mouth from a still one over an
utterance of a second or more (random phases of a moving mouth differ, a still mouth does not), but short
utterances (under about 0.6 s: two or three movements) are often left unknown, and lip-sync style measures
(correlating the mouth with the audio energy envelope, not done here) would be meaningless. The method sees
mouths only: chewing, laughing or silent mouthing during an utterance counts as speaking; a speaker whose
speech the voice detector missed has it in their baseline, which lowers their scores; a face turned away or
without a mesh cannot be scored. The defaults (``floor``, ``threshold``, ``margin``) are reasoned from the
measure's units, not calibrated on a labelled active-speaker set (such as AVA-ActiveSpeaker).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Frames per second below which mouth movement is undersampled (syllables at 4-5 Hz; see the module docstring).
MIN_FPS = 10.0
#: ``faces`` column with the mouth opening in interocular units (``mouth_openings``).
MOUTH_COLUMN = "mouth_open"
#: Interocular units per AU25 intensity step (the std of the lip gap on neutral faces, FER2013): the fallback
#: measure is ``AU25 * AU25_STEP``, which is clipped at 0 (lips at or below the neutral gap all read 0).
AU25_STEP = 0.025


@dataclass(frozen=True)
class SpeakerSettings:
    """Thresholds of ``assign_speakers`` (see the module docstring); mouth units are interocular distances."""

    threshold: float = 0.3
    margin: float = 0.1
    floor: float = 0.01
    min_movements: int = 2
    min_baseline: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1 or not 0 <= self.margin <= 1:
            raise ValueError(f"threshold and margin must lie in [0, 1], got {self.threshold} and {self.margin}")
        if not self.floor > 0:
            raise ValueError(f"floor must be positive, got {self.floor}")
        if self.min_movements < 1 or self.min_baseline < 1:
            raise ValueError(
                f"min_movements and min_baseline must be >= 1, got {self.min_movements}, {self.min_baseline}"
            )


@dataclass(frozen=True)
class SpeakerScore:
    """The evidence that ``track`` speaks ``utterance`` (mouth units: interocular distances per frame step)."""

    utterance: int
    track: int
    presence: float
    movement: float
    baseline: float
    score: float


@dataclass(frozen=True)
class SpeakerAssignment:
    """Who speaks ``utterance``: ``track``, or ``None`` when unknown; ``score`` is the best track's score
    whether or not it was assigned (NaN when no track with a mouth measure was seen during the utterance)."""

    utterance: int
    track: int | None
    score: float


def mouth_openings(landmarks: Sequence[np.ndarray | None], batch: int = 1024) -> list[float | None]:
    """The inner-lip gap over the interocular distance (the measure behind AU25, unclipped) of each 468x3
    face mesh in pixels; ``None`` where a face has no mesh. Meshes are measured in batches of ``batch``."""
    present = [k for k, points in enumerate(landmarks) if points is not None]
    out: list[float | None] = [None] * len(landmarks)
    if present:
        from perception.face.geometry import geometric_measures

        for first in range(0, len(present), batch):
            chunk = present[first : first + batch]
            points = np.stack([np.asarray(landmarks[k], np.float64) for k in chunk])
            for k, gap in zip(chunk, geometric_measures(points)["lip_gap"], strict=True):
                out[k] = float(gap) if np.isfinite(gap) else None
    return out


def _mouth(faces: pd.DataFrame) -> pd.DataFrame:
    """``track``, ``time``, ``mouth`` rows of tracked faces with a mouth measure, sorted by track and time."""
    import pandas as pd

    if MOUTH_COLUMN in faces.columns and faces[MOUTH_COLUMN].notna().any():
        mouth = pd.to_numeric(faces[MOUTH_COLUMN], errors="coerce").astype("float64")
    elif "AU25" in faces.columns:
        mouth = pd.to_numeric(faces["AU25"], errors="coerce").astype("float64") * AU25_STEP
    else:
        mouth = pd.Series(np.nan, index=faces.index)
    table = pd.DataFrame({"track": faces["track"], "time": faces["time"].astype("float64"), "mouth": mouth})
    table = table[table["track"].notna() & table["mouth"].notna()]
    table = table.astype({"track": "int64"})
    return table.sort_values(["track", "time"], kind="stable").reset_index(drop=True)


def _movements(times: np.ndarray, mouth: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint times and ``|change|`` of the mouth between consecutive frames no more than 1.5 steps apart."""
    chained = np.diff(times) <= 1.5 * step + 1e-6
    mid = (times[1:] + times[:-1]) / 2
    return mid[chained], np.abs(np.diff(mouth))[chained]


def speaker_scores(
    faces: pd.DataFrame, utterances: pd.DataFrame, step: float, settings: SpeakerSettings | None = None
) -> list[SpeakerScore]:
    """One ``SpeakerScore`` per (utterance, track seen during it with a mouth measure).

    ``faces`` needs ``track``, ``time`` and ``mouth_open`` (or ``AU25``); ``utterances`` needs ``utterance``,
    ``start`` and ``end`` (seconds); ``step`` is the seconds between analysed frames.
    """
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    settings = settings or SpeakerSettings()
    if 1.0 / step < MIN_FPS - 1e-9:
        logger.debug(
            "%.3g fps is under %.0f: mouth movement is undersampled, speakers are less certain", 1 / step, MIN_FPS
        )
    spans = [
        (int(u), float(s), float(e))
        for u, s, e in zip(utterances["utterance"], utterances["start"], utterances["end"], strict=True)
    ]
    if not spans or faces.empty:
        return []
    mouth = _mouth(faces)
    starts = np.array([s for _, s, _ in spans])
    ends = np.array([e for _, _, e in spans])
    scores: list[SpeakerScore] = []
    for track, group in mouth.groupby("track", sort=True):
        times, values = group["time"].to_numpy(), group["mouth"].to_numpy()
        mid, moved = _movements(times, values, step)
        speaking = ((mid[:, None] >= starts - step) & (mid[:, None] <= ends + step)).any(axis=1)
        silent = moved[~speaking]
        baseline = float(silent.mean()) if len(silent) >= settings.min_baseline else 0.0
        baseline = max(baseline, settings.floor)
        for utterance, start, end in spans:
            seen = int(((times >= start) & (times <= end)).sum())
            inside = moved[(mid >= start - step / 2) & (mid <= end + step / 2)]
            if not seen and not len(inside):
                continue
            presence = min(1.0, seen / max(1.0, (end - start) / step))
            movement = float(inside.mean()) if len(inside) >= settings.min_movements else float("nan")
            contrast = (movement - baseline) / (movement + baseline) if np.isfinite(movement) else 0.0
            score = presence * max(0.0, contrast)
            scores.append(SpeakerScore(utterance, int(track), presence, movement, baseline, score))
    return scores


def assign_speakers(
    faces: pd.DataFrame, utterances: pd.DataFrame, step: float, settings: SpeakerSettings | None = None
) -> list[SpeakerAssignment]:
    """One ``SpeakerAssignment`` per row of ``utterances``, in order (arguments as ``speaker_scores``)."""
    settings = settings or SpeakerSettings()
    by_utterance: dict[int, list[SpeakerScore]] = {}
    for s in speaker_scores(faces, utterances, step, settings):
        by_utterance.setdefault(s.utterance, []).append(s)
    out = []
    for utterance in (int(u) for u in utterances["utterance"]):
        ranked = sorted(by_utterance.get(utterance, []), key=lambda s: s.score, reverse=True)
        if not ranked:
            out.append(SpeakerAssignment(utterance, None, float("nan")))
            continue
        best = ranked[0]
        runner_up = ranked[1].score if len(ranked) > 1 else 0.0
        wins = best.score >= settings.threshold and best.score - runner_up >= settings.margin
        out.append(SpeakerAssignment(utterance, best.track if wins else None, best.score))
    return out


def with_speakers(
    utterances: pd.DataFrame, faces: pd.DataFrame, step: float, settings: SpeakerSettings | None = None
) -> pd.DataFrame:
    """A copy of ``utterances`` with ``speaker_track`` (``Int64``, ``<NA>`` when unknown) and ``speaker_score``
    (``float64``) set by ``assign_speakers``."""
    import pandas as pd

    found = assign_speakers(faces, utterances, step, settings)
    out = utterances.copy()
    out["speaker_track"] = pd.array([a.track for a in found], dtype="Int64")
    out["speaker_score"] = np.array([a.score for a in found], dtype=np.float64)
    return out

"""Multi-face tracking across video frames, and per-track smoothing with abstention.

Matching joins box overlap (IoU) with appearance: each face is summarised by a 32x32 grey thumbnail,
zero-mean and unit-norm, so that two faces that cross (their boxes overlap) keep their ids and a face that
disappears for a moment (occlusion, a missed detection) is picked up again by the track it left, as long
as it returns within ``max_missed`` frames. Assignment is greedy on the combined score, best pair first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS, valence_arousal
from affectlens.types import EmotionPrediction, FaceObservation
from perception.face.geometry import AU_NAMES, FaceGeometry, action_units, geometric_measures

logger = logging.getLogger(__name__)

THUMB = 32


def appearance(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A 1024-d unit vector describing the face in ``box`` (XYXY) of the RGB ``image``."""
    h, w = image.shape[:2]
    x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 <= x1 or y2 <= y1:
        return np.zeros(THUMB * THUMB, np.float32)
    crop = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)
    thumb = cv2.resize(crop, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    return thumb / (np.linalg.norm(thumb) + 1e-6)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of Nx4 and Mx4 XYXY boxes -> NxM."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


@dataclass
class Track:
    """One person's face over time: last box, a running appearance, and frames since last seen."""

    track_id: int
    box: np.ndarray
    look: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))
    missed: int = 0
    hits: int = 1

    def predicted_box(self) -> np.ndarray:
        return self.box + self.velocity * (self.missed + 1)


class FaceTracker:
    """Stable ids for the faces of consecutive (sampled) frames. Call ``update`` once per frame.

    A detection joins a track when ``iou_weight * IoU + (1 - iou_weight) * appearance similarity`` is at
    least ``min_score``; a track unseen for more than ``max_missed`` frames is dropped.
    """

    def __init__(self, max_missed: int = 10, min_score: float = 0.45, iou_weight: float = 0.5) -> None:
        self.max_missed = max_missed
        self.min_score = min_score
        self.iou_weight = iou_weight
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(self, image: np.ndarray, boxes: np.ndarray) -> list[int]:
        """Track ids for ``boxes`` (Nx4 XYXY) found in ``image``, in the same order."""
        looks = [appearance(image, box) for box in boxes]
        ids = [-1] * len(boxes)
        if self.tracks and len(boxes):
            predicted = np.stack([t.predicted_box() for t in self.tracks])
            overlap = iou(predicted, boxes)
            similarity = np.stack([t.look for t in self.tracks]) @ np.stack(looks).T
            score = self.iou_weight * overlap + (1 - self.iou_weight) * np.clip(similarity, 0, 1)
            for flat in np.argsort(-score, axis=None):
                ti, di = np.unravel_index(flat, score.shape)
                if score[ti, di] < self.min_score:
                    break
                track = self.tracks[ti]
                if ids[di] != -1 or track.missed < 0:  # detection taken, or track already matched this frame
                    continue
                step = (boxes[di] - track.box) / (track.missed + 1)
                track.velocity = 0.5 * track.velocity + 0.5 * step
                track.box = boxes[di].astype(np.float32)
                look = 0.8 * track.look + 0.2 * looks[di]
                track.look = look / (np.linalg.norm(look) + 1e-6)
                track.missed, track.hits = -1, track.hits + 1  # -1 marks "matched in this frame"
                ids[di] = track.track_id
        for track in self.tracks:
            track.missed = 0 if track.missed < 0 else track.missed + 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for di, box in enumerate(boxes):
            if ids[di] == -1:
                self.tracks.append(Track(self._next_id, box.astype(np.float32), looks[di]))
                ids[di] = self._next_id
                self._next_id += 1
        return ids


class TrackSmoother:
    """Per-track exponential smoothing of expression distributions, with abstention.

    ``alpha`` is the weight of the newest frame, scaled by the face's quality so that poor frames move the
    smoothed estimate less. The smoothed label is ``"uncertain"`` when its probability is below
    ``min_confidence`` or the face's quality is below ``min_quality``.
    """

    def __init__(self, alpha: float = 0.4, min_confidence: float = 0.45, min_quality: float = 0.3) -> None:
        self.alpha = alpha
        self.min_confidence = min_confidence
        self.min_quality = min_quality
        self._state: dict[int, np.ndarray] = {}

    def update(self, track_id: int, probabilities: np.ndarray, quality: float) -> tuple[np.ndarray, str]:
        """Smoothed distribution (ordered as ``CANONICAL_EMOTIONS``) and its label or ``"uncertain"``."""
        weight = self.alpha * float(np.clip(quality, 0.05, 1.0))
        previous = self._state.get(track_id)
        smoothed = probabilities if previous is None else (1 - weight) * previous + weight * probabilities
        smoothed = smoothed / smoothed.sum()
        self._state[track_id] = smoothed
        top = int(np.argmax(smoothed))
        if smoothed[top] < self.min_confidence or quality < self.min_quality:
            return smoothed, "uncertain"
        return smoothed, CANONICAL_EMOTIONS[top]


class TrackBaseline:
    """A person's own calm face within one video: the median geometric measures over their neutral,
    good-quality, near-frontal frames (AUs are then measured against it instead of the population), and
    their open-eye level (for blinks).

    The baseline is used once ``min_frames`` calm frames are collected; the last ``window`` are kept.
    """

    def __init__(self, min_frames: int = 5, window: int = 60) -> None:
        self.min_frames = min_frames
        self.window = window
        self._calm: dict[int, list[dict[str, float]]] = {}
        self._eyes: dict[int, list[float]] = {}

    def observe(self, track_id: int, points: np.ndarray, calm: bool, eyes: float) -> None:
        if calm:
            measures = {k: float(v[0]) for k, v in geometric_measures(points[None]).items()}
            self._calm.setdefault(track_id, []).append(measures)
            del self._calm[track_id][: -self.window]
        self._eyes.setdefault(track_id, []).append(eyes)
        del self._eyes[track_id][: -self.window]

    def measures(self, track_id: int) -> dict[str, float] | None:
        frames = self._calm.get(track_id, [])
        if len(frames) < self.min_frames:
            return None
        return {k: float(np.median([f[k] for f in frames])) for k in frames[0]}

    def open_eyes(self, track_id: int) -> float | None:
        """The track's usual open-eye aspect ratio (the 80th percentile of what it has shown), or None."""
        seen = self._eyes.get(track_id, [])
        return float(np.percentile(seen, 80)) if len(seen) >= self.min_frames else None


class FaceTimeline:
    """Adds track ids, smoothed and abstaining labels, per-person AU baselines and eye closure to the faces
    of consecutive frames of one video.

    With ``geometry`` (the pipeline's ``FaceGeometry``), a track's AUs are re-measured against its own calm
    frames (smoothed state neutral, quality >= 0.5, |yaw| and |pitch| under 20 degrees) once
    ``TrackBaseline.min_frames`` of them are seen: people's resting faces differ (a low brow is not AU4 for
    everyone), so this removes their offset.
    """

    def __init__(
        self,
        tracker: FaceTracker | None = None,
        smoother: TrackSmoother | None = None,
        geometry: FaceGeometry | None = None,
        baseline: TrackBaseline | None = None,
    ) -> None:
        self.tracker = tracker or FaceTracker()
        self.smoother = smoother or TrackSmoother()
        self.geometry = geometry
        self.baseline = baseline or TrackBaseline()

    def _personal(self, face: FaceObservation, track_id: int, state: str) -> dict[str, Any]:
        """AUs against the track's baseline, and eye closure, for a face with a mesh."""
        if face.landmarks is None or face.eye_openness is None or face.pose is None:
            return {}
        eyes = float(np.mean(face.eye_openness))
        calm = (
            state == "neutral" and face.quality.score >= 0.5 and abs(face.pose.yaw) < 20 and abs(face.pose.pitch) < 20
        )
        self.baseline.observe(track_id, face.landmarks, calm, eyes)
        out: dict[str, Any] = {}
        level = self.baseline.open_eyes(track_id)
        if level is not None:
            out["eyes_closed"] = bool(eyes < 0.5 * level)
        own = self.baseline.measures(track_id)
        if self.geometry is not None and own is not None:
            aus = action_units(face.landmarks[None], self.geometry.reference, own)[0]
            out["aus"] = {au: float(v) for au, v in zip(AU_NAMES, aus, strict=True)}
            out["au_reference"] = "track"
        return out

    def __call__(self, image: np.ndarray, faces: tuple[FaceObservation, ...]) -> tuple[FaceObservation, ...]:
        if not faces:
            self.tracker.update(image, np.zeros((0, 4), np.float32))
            return faces
        ids = self.tracker.update(image, np.array([f.box for f in faces], np.float32))
        out = []
        for face, track_id in zip(faces, ids, strict=True):
            probs = np.array([face.expression.probabilities[e] for e in CANONICAL_EMOTIONS])
            smoothed, state = self.smoother.update(track_id, probs, face.quality.score)
            prediction = EmotionPrediction.from_vector(smoothed, f"{face.expression.model}+smoothed")
            prediction = EmotionPrediction(
                prediction.probabilities, prediction.model, *valence_arousal(prediction.probabilities)
            )
            extra = self._personal(face, track_id, state)
            out.append(replace(face, track_id=track_id, smoothed=prediction, state=state, **extra))
        return tuple(out)

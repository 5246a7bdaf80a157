"""Typed results shared by every stage: frozen dataclasses with ``to_dict()`` and a DataFrame view.

Coordinates are pixels in the original image, XYXY boxes, (x, y[, z]) points; times are seconds.
The JSON form of ``AnalysisResult.to_dict()`` is described by ``affectlens/schema/result.schema.json`` (its
``tree`` by ``affectlens/schema/tree.schema.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.tree import AffectTree

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = "1.0"
#: The 17 action units of the BRIEF, as DataFrame columns (``perception.face.geometry.AU_NAMES``).
AU_COLUMNS = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12",
    "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)  # fmt: skip
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "result.schema.json"
#: ``multimodal``: several inputs of one moment analysed together (``AnalysisResult.parts``).
MediaKind = Literal["image", "video", "audio", "text", "multimodal"]


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


@dataclass(frozen=True)
class FaceQuality:
    """How usable a face crop is, in [0, 1] overall, with the factors it comes from.

    ``size`` is the box's shorter side in pixels; ``sharpness`` the variance of the Laplacian on the
    64x64 grey crop; ``detection`` the detector's score; ``mesh`` the landmarker's face-presence score
    (``None`` when no mesh was run); ``frontality`` cos(yaw) cos(pitch) of the head pose (1 facing the
    camera; ``None`` without a mesh).
    """

    score: float
    size: float
    sharpness: float
    detection: float
    mesh: float | None = None
    frontality: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": _round(self.score),
            "size": _round(self.size, 1),
            "sharpness": _round(self.sharpness, 1),
            "detection": _round(self.detection),
            "mesh": None if self.mesh is None else _round(self.mesh),
            "frontality": None if self.frontality is None else _round(self.frontality),
        }


@dataclass(frozen=True)
class EmotionPrediction:
    """A distribution over the canonical emotions from one model (face, voice or words).

    ``valence`` and ``arousal`` are in [-1, 1] when the model gives them, else ``None``.
    """

    probabilities: dict[str, float]
    model: str
    valence: float | None = None
    arousal: float | None = None

    @property
    def label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    @classmethod
    def from_vector(
        cls, vector: np.ndarray, model: str, valence: float | None = None, arousal: float | None = None
    ) -> EmotionPrediction:
        """``vector`` is ordered as ``CANONICAL_EMOTIONS``."""
        if vector.shape != (len(CANONICAL_EMOTIONS),):
            raise ValueError(f"expected {len(CANONICAL_EMOTIONS)} probabilities, got shape {vector.shape}")
        probs = {name: float(p) for name, p in zip(CANONICAL_EMOTIONS, vector, strict=True)}
        return cls(probs, model, valence, arousal)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "confidence": _round(self.confidence),
            "probabilities": {k: _round(v) for k, v in self.probabilities.items()},
            "model": self.model,
            "valence": None if self.valence is None else _round(self.valence),
            "arousal": None if self.arousal is None else _round(self.arousal),
        }


@dataclass(frozen=True)
class TextEmotion:
    """Emotion in words: the canonical distribution, the 28 fine GoEmotions labels (independent
    probabilities, multi-label) and the words that drove the prediction, most influential first."""

    emotion: EmotionPrediction
    fine: dict[str, float]
    salient_words: tuple[tuple[str, float], ...] = ()
    #: The text network's pooled sentence embedding ``(d,)`` (the fusion adapter's text token); not serialised.
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.emotion.to_dict(),
            "fine": {k: _round(v) for k, v in self.fine.items()},
            "salient_words": [[w, _round(s)] for w, s in self.salient_words],
        }


@dataclass(frozen=True)
class Prosody:
    """Voice measures over one speech segment.

    Pitch in Hz (mean) and semitones (range, 10th-90th percentile); energy in dBFS (RMS);
    ``speaking_rate`` in syllables per second (energy-peak nuclei); ``pause_ratio`` the unvoiced-or-silent
    share of the segment; ``jitter`` and ``shimmer`` relative period and amplitude perturbation (voice
    quality proxies); ``hnr`` harmonics-to-noise ratio in dB. ``None`` where unvoiced throughout.
    """

    pitch_mean: float | None
    pitch_range: float | None
    energy: float
    speaking_rate: float
    pause_ratio: float
    jitter: float | None = None
    shimmer: float | None = None
    hnr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if v is None else _round(v)) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Utterance:
    """One stretch of speech (or one typed text), with what the voice and the words say.

    ``start``/``end`` are seconds in the source (0/0 for typed text).
    """

    index: int
    start: float
    end: float
    text: str | None = None
    speech_emotion: EmotionPrediction | None = None
    text_emotion: TextEmotion | None = None
    prosody: Prosody | None = None
    #: The speech-emotion head's input ``(feature_dim,)``: pooled Whisper-encoder frames and acoustic measures
    #: (the fusion adapter's voice token); not serialised.
    voice_features: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": _round(self.start, 3),
            "end": _round(self.end, 3),
            "text": self.text,
            "speech_emotion": None if self.speech_emotion is None else self.speech_emotion.to_dict(),
            "text_emotion": None if self.text_emotion is None else self.text_emotion.to_dict(),
            "prosody": None if self.prosody is None else self.prosody.to_dict(),
        }


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees from the mesh: yaw > 0 turns the face towards the image's left (the
    person's own right), pitch > 0 tilts the chin down, roll > 0 tilts the head clockwise in the image."""

    yaw: float
    pitch: float
    roll: float

    def to_dict(self) -> dict[str, float]:
        return {"yaw": _round(self.yaw, 1), "pitch": _round(self.pitch, 1), "roll": _round(self.roll, 1)}


@dataclass(frozen=True)
class GazeDirection:
    """Eye-in-head gaze in degrees from the iris model: yaw > 0 looks towards the image's right, pitch > 0
    looks down (add the head pose for a direction relative to the camera)."""

    yaw: float
    pitch: float

    def to_dict(self) -> dict[str, float]:
        return {"yaw": _round(self.yaw, 1), "pitch": _round(self.pitch, 1)}


@dataclass(frozen=True)
class FaceObservation:
    """One face in one frame.

    ``box`` is XYXY in pixels; ``keypoints`` the detector's 5 points (left eye, right eye, nose, left and
    right mouth corner) as 5x2; ``landmarks`` the 468-point mesh as 468x3 (x, y in pixels, z relative depth
    in pixels) or ``None`` when no mesh was run or the mesh found no face. ``pose``, ``eye_openness`` (eye
    aspect ratios, about 0.3 open and under 0.1 closed) and ``aus`` (the 17 BRIEF action units, intensity
    0-5, geometric proxies; see ``perception.face.geometry``) come from the mesh and are ``None`` without it.
    ``gaze`` is the eye-in-head direction from the iris model. In videos, ``track_id`` names the person across frames, ``smoothed`` is the track's smoothed
    distribution and ``state`` its label, or ``"uncertain"`` when confidence or quality is too low.
    ``au_reference`` says what the AUs are measured against: ``"population"`` (neutral FER2013 faces) or
    ``"track"`` (this person's own calm frames, once a video has shown enough of them). ``eyes_closed`` (videos)
    is True while both eyes are under half the track's open-eye level: a run of such frames is a blink.
    """

    index: int
    box: tuple[float, float, float, float]
    detection_score: float
    expression: EmotionPrediction
    quality: FaceQuality
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)
    landmarks: np.ndarray | None = field(default=None, compare=False, repr=False)
    pose: HeadPose | None = None
    gaze: GazeDirection | None = None
    eye_openness: tuple[float, float] | None = None
    aus: dict[str, float] | None = None
    track_id: int | None = None
    smoothed: EmotionPrediction | None = None
    state: str | None = None
    au_reference: str | None = None
    eyes_closed: bool | None = None

    def to_dict(self, include_landmarks: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "box": [_round(v, 1) for v in self.box],
            "detection_score": _round(self.detection_score),
            "expression": self.expression.to_dict(),
            "quality": self.quality.to_dict(),
            "keypoints": None if self.keypoints is None else np.round(self.keypoints.astype(np.float64), 1).tolist(),
            "has_landmarks": self.landmarks is not None,
            "pose": None if self.pose is None else self.pose.to_dict(),
            "gaze": None if self.gaze is None else self.gaze.to_dict(),
            "eye_openness": None if self.eye_openness is None else [_round(v, 3) for v in self.eye_openness],
            "aus": None if self.aus is None else {k: _round(v, 2) for k, v in self.aus.items()},
            "track_id": self.track_id,
            "smoothed": None if self.smoothed is None else self.smoothed.to_dict(),
            "state": self.state,
            "au_reference": self.au_reference,
            "eyes_closed": self.eyes_closed,
        }
        if include_landmarks:
            out["landmarks"] = (
                None if self.landmarks is None else np.round(self.landmarks.astype(np.float64), 2).tolist()
            )
        return out


@dataclass(frozen=True)
class FrameResult:
    """Every face found in one frame (an image is a clip with one frame)."""

    index: int
    time: float
    faces: tuple[FaceObservation, ...]

    def to_dict(self, include_landmarks: bool = False) -> dict[str, Any]:
        return {
            "index": self.index,
            "time": _round(self.time, 3),
            "faces": [f.to_dict(include_landmarks) for f in self.faces],
        }


@dataclass(frozen=True)
class AnalysisResult:
    """The analysis of one image, video, audio clip or text, or of several together (``kind="multimodal"``).

    ``frames`` hold the faces (empty for audio and text); ``utterances`` the speech segments of audio or a
    video's sound track, or the one typed text. ``width``/``height`` are ``None`` without pictures.

    A multimodal result keeps each input's own result in ``parts`` (in order); its ``frames`` and ``utterances``
    are the parts' concatenated (indices and times stay each part's own), ``source`` names the parts joined by
    ``" + "``, and ``width``, ``height``, ``fps`` and ``duration`` are ``None`` (see the parts). ``tree`` is the
    affective tree when one was built (``Analyzer.analyze`` builds it; the ``analyze_*`` methods do not).
    """

    source: str
    kind: MediaKind
    width: int | None
    height: int | None
    fps: float | None
    duration: float | None
    frames: tuple[FrameResult, ...]
    models: dict[str, str | None]
    weights: dict[str, str] = field(default_factory=dict)
    utterances: tuple[Utterance, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    parts: tuple[AnalysisResult, ...] = ()
    tree: AffectTree | None = None

    @property
    def faces(self) -> list[FaceObservation]:
        """All face observations, frame by frame."""
        return [face for frame in self.frames for face in frame.faces]

    @property
    def num_faces(self) -> int:
        return sum(len(frame.faces) for frame in self.frames)

    def mean_expression(self) -> dict[str, float] | None:
        """Quality-weighted mean expression distribution over all faces, or ``None`` without faces."""
        faces = self.faces
        if not faces:
            return None
        weights = np.array([max(f.quality.score, 1e-3) for f in faces])
        probs = np.array([[f.expression.probabilities[e] for e in CANONICAL_EMOTIONS] for f in faces])
        mean = (weights[:, None] * probs).sum(0) / weights.sum()
        return {e: float(p) for e, p in zip(CANONICAL_EMOTIONS, mean, strict=True)}

    def to_dict(self, include_landmarks: bool = False) -> dict[str, Any]:
        """The JSON form; ``parts`` (an index of a multimodal result's inputs into ``frames`` and ``utterances``)
        and ``tree`` appear only when present."""
        mean = self.mean_expression()
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "kind": self.kind,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "duration": self.duration,
            "num_frames": len(self.frames),
            "num_faces": self.num_faces,
            "summary": None
            if mean is None
            else {
                "label": max(mean, key=mean.__getitem__),
                "probabilities": {k: _round(v) for k, v in mean.items()},
            },
            "frames": [frame.to_dict(include_landmarks) for frame in self.frames],
            "utterances": [u.to_dict() for u in self.utterances],
            "models": dict(self.models),
            "weights": dict(self.weights),
            "settings": dict(self.settings),
            "warnings": list(self.warnings),
        }
        if self.parts:
            out["parts"] = self._parts_index()
        if self.tree is not None:
            out["tree"] = self.tree.to_dict()
        return out

    def _parts_index(self) -> list[dict[str, Any]]:
        index, first_frame, first_utterance = [], 0, 0
        for part in self.parts:
            index.append(
                {
                    "source": part.source,
                    "kind": part.kind,
                    "width": part.width,
                    "height": part.height,
                    "fps": part.fps,
                    "duration": part.duration,
                    "first_frame": first_frame,
                    "num_frames": len(part.frames),
                    "first_utterance": first_utterance,
                    "num_utterances": len(part.utterances),
                }
            )
            first_frame += len(part.frames)
            first_utterance += len(part.utterances)
        return index

    def to_json(self, include_landmarks: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(include_landmarks), indent=indent)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per face per frame: time, box, quality, label and one column per emotion (a multimodal
        result's rows name the part they come from in ``source``)."""
        import pandas as pd

        if self.parts:
            tables = [part.to_dataframe() for part in self.parts]
            filled = [t for t in tables if len(t)]
            return pd.concat(filled, ignore_index=True) if filled else tables[0]

        rows = []
        for frame in self.frames:
            for face in frame.faces:
                x1, y1, x2, y2 = face.box
                rows.append(
                    {
                        "source": self.source,
                        "frame": frame.index,
                        "time": frame.time,
                        "face": face.index,
                        "track": face.track_id,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "detection_score": face.detection_score,
                        "quality": face.quality.score,
                        "label": face.expression.label,
                        "confidence": face.expression.confidence,
                        "state": face.state,
                        "yaw": None if face.pose is None else face.pose.yaw,
                        "pitch": None if face.pose is None else face.pose.pitch,
                        "roll": None if face.pose is None else face.pose.roll,
                        "gaze_yaw": None if face.gaze is None else face.gaze.yaw,
                        "gaze_pitch": None if face.gaze is None else face.gaze.pitch,
                        "eyes_closed": face.eyes_closed,
                        "au_reference": face.au_reference,
                        **{au: (None if face.aus is None else face.aus[au]) for au in AU_COLUMNS},
                        **{e: face.expression.probabilities[e] for e in CANONICAL_EMOTIONS},
                    }
                )
        columns = [
            "source", "frame", "time", "face", "track", "x1", "y1", "x2", "y2", "detection_score", "quality",
            "label", "confidence", "state", "yaw", "pitch", "roll", "gaze_yaw", "gaze_pitch", "eyes_closed", "au_reference", *AU_COLUMNS,
            *CANONICAL_EMOTIONS,
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

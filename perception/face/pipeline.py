"""Face pipeline: detect every face, fit the mesh, score quality, and classify the expression in one batch."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from affectlens.labels import valence_arousal
from affectlens.types import EmotionPrediction, FaceObservation, FaceQuality, GazeDirection, HeadPose
from perception.face.detector import Detections, FaceDetector
from perception.face.expression import ExpressionModel, grey_crop
from perception.face.gaze import IrisGaze
from perception.face.geometry import FaceGeometry, FaceGeometryResult
from perception.face.landmarks import FaceMesh
from perception.face.tracking import iou

logger = logging.getLogger(__name__)


def face_quality(
    crop64: np.ndarray, box: np.ndarray, detection: float, mesh: float | None, pose: HeadPose | None = None
) -> FaceQuality:
    """Quality in [0, 1]: detection score x size x sharpness x frontality (x the mesh score, which falls
    when the face is occluded or not a face).

    The size factor rises from 0.5 at a 24-pixel face to 1 at 96 pixels; the sharpness factor from 0.5 at
    no texture to 1 at a Laplacian variance of 300 (grey levels squared) on the 64x64 crop; the frontality
    factor is ``0.5 + 0.5 cos(yaw) cos(pitch)`` (1 facing the camera, 0.5 in profile).
    """
    size = float(min(box[2] - box[0], box[3] - box[1]))
    sharpness = float(cv2.Laplacian((crop64 + 1.0) * 127.5, cv2.CV_32F).var())
    size_f = 0.5 + 0.5 * float(np.clip((size - 24) / 72, 0, 1))
    sharp_f = 0.5 + 0.5 * float(np.clip(sharpness / 300.0, 0, 1))
    frontal = None if pose is None else float(np.cos(np.radians(pose.yaw)) * np.cos(np.radians(pose.pitch)))
    pose_f = 1.0 if frontal is None else 0.5 + 0.5 * max(frontal, 0.0)
    score = float(detection) * size_f * sharp_f * pose_f * (1.0 if mesh is None else mesh)
    return FaceQuality(
        score=score, size=size, sharpness=sharpness, detection=float(detection), mesh=mesh, frontality=frontal
    )


@dataclass(frozen=True)
class LocatedFace:
    """A face found in frame ``frame`` of a batch: its box, detection score, keypoints and mesh, before
    the expression and geometry stages."""

    frame: int
    box: np.ndarray
    score: float
    keypoints: np.ndarray | None
    points: np.ndarray | None
    mesh_score: float | None

    @classmethod
    def from_mesh(cls, frame: int, points: np.ndarray, score: float, mesh_score: float | None) -> LocatedFace:
        """A meshed face whose box and keypoints come from its mesh (``mesh_box``, ``mesh_keypoints``)."""
        return cls(frame, mesh_box(points), score, mesh_keypoints(points), points, mesh_score)


def _with_affect(prediction: EmotionPrediction) -> EmotionPrediction:
    """Add valence and arousal from the circumplex mapping (``affectlens.labels.CIRCUMPLEX``)."""
    valence, arousal = valence_arousal(prediction.probabilities)
    return EmotionPrediction(prediction.probabilities, prediction.model, valence, arousal)


class FacePipeline:
    """Wires injected parts; builds nothing itself (see ``affectlens.analyzer.build_face_pipeline``).

    ``fallback`` runs when the main detector finds no face; its boxes are kept only where the mesh
    confirms a face, which filters the Haar cascade's false positives.
    """

    def __init__(
        self,
        detector: FaceDetector,
        expression: ExpressionModel,
        landmarker: FaceMesh | None = None,
        fallback: FaceDetector | None = None,
        geometry: FaceGeometry | None = None,
        gaze: IrisGaze | None = None,
        max_faces: int = 32,
    ) -> None:
        self.detector = detector
        self.expression = expression
        self.landmarker = landmarker
        self.fallback = fallback
        self.geometry = geometry
        self.gaze = gaze
        self.max_faces = max_faces

    def describe(self) -> dict[str, Any]:
        """Names of the parts, for provenance."""
        return {
            "detector": self.detector.name,
            "fallback": None if self.fallback is None else self.fallback.name,
            "landmarker": None if self.landmarker is None else self.landmarker.name,
            "expression": self.expression.name,
            "geometry": None if self.geometry is None else self.geometry.name,
            "gaze": None if self.gaze is None else self.gaze.name,
        }

    def weight_files(self) -> dict[str, str]:
        """``{manifest name: sha256}`` of every weight file the parts loaded."""
        parts = (self.detector, self.fallback, self.landmarker, self.expression, self.geometry, self.gaze)
        return {k: v for part in parts if part is not None for k, v in getattr(part, "weight_files", {}).items()}

    def _gaze(self, image: np.ndarray, points: np.ndarray | None) -> GazeDirection | None:
        if self.gaze is None or points is None:
            return None
        found = self.gaze(image, points)
        return GazeDirection(found.yaw, found.pitch)

    def detect(self, image: np.ndarray) -> tuple[Detections, bool]:
        """Detections and whether they came from the fallback detector."""
        found = self.detector.detect(image)
        if len(found) == 0 and self.fallback is not None:
            return self.fallback.detect(image), True
        return found, False

    def locate(self, image: np.ndarray, frame: int = 0, skip: np.ndarray | None = None) -> list[LocatedFace]:
        """Detect faces and fit the mesh on each, largest first; detections overlapping a ``skip`` box
        (Nx4 XYXY, IoU > 0.3: faces already followed by a ``FaceStream``) are left out."""
        found, from_fallback = self.detect(image)
        if len(found) == 0:
            return []
        areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
        order = np.argsort(-areas)[: self.max_faces]
        if skip is not None and len(skip):
            order = np.array([i for i in order if iou(found.boxes[i : i + 1], skip).max() <= 0.3], dtype=np.int64)
        kept: list[LocatedFace] = []
        for i in order:
            box, kps = found.boxes[i], None if found.keypoints is None else found.keypoints[i]
            mesh_pts, mesh_score = (None, None)
            if self.landmarker is not None:
                mesh_pts, mesh_score = self.landmarker(image, box, kps)
                if from_fallback and mesh_pts is None:
                    continue  # an unconfirmed Haar box is most likely not a face
            kept.append(LocatedFace(frame, box, float(found.scores[i]), kps, mesh_pts, mesh_score))
        return kept

    def describe_faces(self, images: list[np.ndarray], located: list[LocatedFace]) -> list[tuple[FaceObservation, ...]]:
        """Expression, geometry, gaze and quality for faces found in ``images`` (``LocatedFace.frame``
        indexes the list), computed in one batch across all of them; one tuple of faces per image."""
        per_frame: list[list[FaceObservation]] = [[] for _ in images]
        if not located:
            return [() for _ in images]
        crops = np.stack([self.expression.preprocess(images[f.frame], f.box) for f in located])
        probs = self.expression.predict_batch(crops)
        meshed = [i for i, f in enumerate(located) if f.points is not None]
        shapes: dict[int, FaceGeometryResult] = {}
        if self.geometry is not None and meshed:
            points = np.stack([located[i].points for i in meshed])  # type: ignore[misc]
            shapes = dict(zip(meshed, self.geometry(points), strict=True))
        for idx, (face, p) in enumerate(zip(located, probs, strict=True)):
            image = images[face.frame]
            shape = shapes.get(idx)
            pose = None if shape is None else HeadPose(shape.yaw, shape.pitch, shape.roll)
            box = face.box
            per_frame[face.frame].append(
                FaceObservation(
                    index=len(per_frame[face.frame]),
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    detection_score=face.score,
                    expression=_with_affect(EmotionPrediction.from_vector(p, self.expression.name)),
                    quality=face_quality(grey_crop(image, box, 64), box, face.score, face.mesh_score, pose),
                    keypoints=face.keypoints,
                    landmarks=face.points,
                    pose=pose,
                    gaze=self._gaze(image, face.points),
                    eye_openness=None if shape is None else shape.eye_openness,
                    aus=None if shape is None else shape.aus,
                    au_reference=None if shape is None else "population",
                )
            )
        return [tuple(faces) for faces in per_frame]

    def __call__(self, image: np.ndarray) -> tuple[FaceObservation, ...]:
        """All faces in an RGB uint8 HxWx3 image, largest first."""
        return self.describe_faces([image], self.locate(image))[0]

    def stream(self, keyframe_interval: int = 15) -> FaceStream:
        """A stateful video processor that detects on key frames and follows faces with the mesh between."""
        return FaceStream(self, keyframe_interval)


def mesh_box(points: np.ndarray) -> np.ndarray:
    """XYXY box of the mesh's points: on FER2013 faces and the sample video it matches CenterFace's box
    to within 1-3% of the face size (median), so crops made from it frame the face the same way."""
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()], np.float32)


#: Mesh points averaged into CenterFace-style keypoints: image-left eye, image-right eye, nose, mouth corners.
_KEYPOINTS = ((33, 133), (362, 263), (1,), (61,), (291,))


def mesh_keypoints(points: np.ndarray) -> np.ndarray:
    """5x2 keypoints (eyes, nose tip, mouth corners) in CenterFace's order, from the mesh."""
    return np.stack([points[list(ids), :2].mean(0) for ids in _KEYPOINTS]).astype(np.float32)


class FaceStream:
    """Video mode of a ``FacePipeline``: the detector runs on key frames (every ``keyframe_interval`` frames,
    and whenever a followed face is lost or none is followed); in between, each face's mesh from the previous
    frame places its mesh crop in the next (as MediaPipe's face-mesh graph does), so a frame costs one mesh
    per face instead of a detection. The remaining stages run in one batch over a chunk of frames.

    When a followed face is lost (occlusion, a crossing, leaving the frame) the detector runs on every frame
    for up to ``keyframe_interval`` frames until as many faces are found again, so a face that reappears is
    picked up at once. Without a landmarker there is nothing to follow with: every frame is a key frame.
    """

    def __init__(self, pipeline: FacePipeline, keyframe_interval: int = 15) -> None:
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        self.pipeline = pipeline
        self.keyframe_interval = keyframe_interval
        self._followed: list[LocatedFace] = []
        self._since_detection = 0
        # After a face is lost, detect on every frame (up to ``keyframe_interval`` frames) until it is back.
        self._recover = 0
        self._wanted = 0
        self.detections = 0  # frames the detector ran on so far (for benchmarks and tests)

    def _follow(self, image: np.ndarray, frame: int) -> list[LocatedFace]:
        """Refit the mesh of every followed face where it was in the previous frame; returns those still there."""
        landmarker = self.pipeline.landmarker
        assert landmarker is not None
        kept: list[LocatedFace] = []
        for face in self._followed:
            assert face.points is not None
            points, score = landmarker(image, mesh_box(face.points), mesh_keypoints(face.points))
            if points is None:
                continue
            located = LocatedFace.from_mesh(frame, points, face.score, score)
            if kept and iou(located.box[None], np.stack([f.box for f in kept])).max() > 0.5:
                continue  # two followed faces converged on one face
            kept.append(located)
        return kept

    def locate(self, image: np.ndarray, frame: int = 0) -> list[LocatedFace]:
        """Faces in the next frame of the video (``frame`` is its index in the current chunk)."""
        if self.pipeline.landmarker is None:
            self.detections += 1
            return self.pipeline.locate(image, frame)
        faces = self._follow(image, frame) if self._followed else []
        self._since_detection += 1
        if len(faces) < len(self._followed):  # a face was lost (occluded, left, or merged with another)
            self._recover, self._wanted = self.keyframe_interval, len(self._followed)
        recovering = self._recover > 0 and len(faces) < self._wanted
        self._recover = max(self._recover - 1, 0)
        if recovering or not faces or self._since_detection >= self.keyframe_interval:
            skip = np.stack([f.box for f in faces]) if faces else None
            found = self.pipeline.locate(image, frame, skip=skip)
            # Detected faces take the mesh's box and keypoints, as followed faces do, so crops stay consistent.
            faces += [
                f if f.points is None else LocatedFace.from_mesh(frame, f.points, f.score, f.mesh_score) for f in found
            ]
            self._since_detection = 0
            self.detections += 1
        faces.sort(key=lambda f: -float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
        self._followed = [f for f in faces if f.points is not None]
        return faces

    def __call__(self, images: list[np.ndarray]) -> list[tuple[FaceObservation, ...]]:
        """Faces of consecutive frames, one tuple per frame; pass frames in order, in chunks of any size."""
        located = [face for i, image in enumerate(images) for face in self.locate(image, i)]
        return self.pipeline.describe_faces(images, located)

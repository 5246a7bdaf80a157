"""Face pipeline: detect every face, fit the mesh, score quality, and classify the expression in one batch."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from affectlens.labels import valence_arousal
from affectlens.types import EmotionPrediction, FaceObservation, FaceQuality, GazeDirection, HeadPose
from perception.face.detector import Detections, FaceDetector
from perception.face.expression import FerMiniXception
from perception.face.gaze import IrisGaze
from perception.face.geometry import FaceGeometry, FaceGeometryResult
from perception.face.landmarks import FaceMesh

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
        expression: FerMiniXception,
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

    def __call__(self, image: np.ndarray) -> tuple[FaceObservation, ...]:
        """All faces in an RGB uint8 HxWx3 image, largest first."""
        found, from_fallback = self.detect(image)
        if len(found) == 0:
            return ()
        areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
        order = np.argsort(-areas)[: self.max_faces]
        kept: list[tuple[np.ndarray, float, np.ndarray | None, np.ndarray | None, float | None]] = []
        for i in order:
            box, kps = found.boxes[i], None if found.keypoints is None else found.keypoints[i]
            mesh_pts, mesh_score = (None, None)
            if self.landmarker is not None:
                mesh_pts, mesh_score = self.landmarker(image, box, kps)
                if from_fallback and mesh_pts is None:
                    continue  # an unconfirmed Haar box is most likely not a face
            kept.append((box, float(found.scores[i]), kps, mesh_pts, mesh_score))
        if not kept:
            return ()
        crops = np.stack([self.expression.preprocess(image, box) for box, *_ in kept])
        probs = self.expression.predict_batch(crops)
        meshed = [i for i, face in enumerate(kept) if face[3] is not None]
        shapes: dict[int, FaceGeometryResult] = {}
        if self.geometry is not None and meshed:
            points = np.stack([kept[i][3] for i in meshed])  # type: ignore[misc]
            shapes = dict(zip(meshed, self.geometry(points), strict=True))
        faces = []
        for idx, ((box, score, kps, mesh_pts, mesh_score), crop, p) in enumerate(zip(kept, crops, probs, strict=True)):
            shape = shapes.get(idx)
            pose = None if shape is None else HeadPose(shape.yaw, shape.pitch, shape.roll)
            faces.append(
                FaceObservation(
                    index=idx,
                    box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                    detection_score=score,
                    expression=_with_affect(EmotionPrediction.from_vector(p, self.expression.name)),
                    quality=face_quality(crop, box, score, mesh_score, pose),
                    keypoints=kps,
                    landmarks=mesh_pts,
                    pose=pose,
                    gaze=self._gaze(image, mesh_pts),
                    eye_openness=None if shape is None else shape.eye_openness,
                    aus=None if shape is None else shape.aus,
                )
            )
        return tuple(faces)

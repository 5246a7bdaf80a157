"""The 468-point MediaPipe face mesh (TFLite, run with ``ai-edge-litert``) on a rotated square face crop."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import cv2
import numpy as np

from affectlens import weights
from affectlens.registry import register

logger = logging.getLogger(__name__)

NUM_LANDMARKS = 468
INPUT_SIZE = 192
ROI_SCALE = 1.5  # MediaPipe enlarges the detection box by 1.5 before running the mesh


def roi_transform(box: np.ndarray, keypoints: np.ndarray | None, size: int = INPUT_SIZE) -> np.ndarray:
    """2x3 affine map from image pixels to a ``size`` x ``size`` crop, upright by the eye line.

    ``box`` is XYXY; ``keypoints`` 5x2 with the two eyes first (or None for an unrotated crop).
    """
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * ROI_SCALE
    angle = 0.0
    if keypoints is not None:
        (lx, ly), (rx, ry) = keypoints[0], keypoints[1]
        angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, size / side)
    matrix[:, 2] += np.array([size / 2 - cx, size / 2 - cy])
    return matrix


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide the TFLite runtime's unconditional 'Created XNNPACK delegate' line (written by C++ to fd 2)."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceMesh:
    """MediaPipe Face Mesh: 468 points (x, y in image pixels, z relative depth in pixels) and a face score."""

    name = "mediapipe-facemesh"

    def __init__(self, model_path: str | None = None, threshold: float = 0.5, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        found = weights.locate("mediapipe-face-landmark", model_path)
        path = found.path
        self.weight_files = {found.name: found.sha256}
        with _native_stderr_silenced():
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = self.interpreter.get_output_details()
        self._points = outputs[0]["index"]
        self._flag = outputs[1]["index"]
        self.threshold = threshold
        self._lock = threading.Lock()  # a TFLite interpreter is not re-entrant

    def __call__(
        self, image: np.ndarray, box: np.ndarray, keypoints: np.ndarray | None
    ) -> tuple[np.ndarray | None, float]:
        """Return (468x3 landmarks or None when the mesh sees no face, face-presence score in [0, 1])."""
        matrix = roi_transform(box, keypoints)
        crop = cv2.warpAffine(
            image, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        tensor = (crop.astype(np.float32) / 255.0)[None]
        with self._lock:
            self.interpreter.set_tensor(self._input, tensor)
            self.interpreter.invoke()
            raw = self.interpreter.get_tensor(self._points).reshape(NUM_LANDMARKS, 3).copy()
            flag = float(self.interpreter.get_tensor(self._flag).reshape(-1)[-1])
        score = float(1.0 / (1.0 + np.exp(-flag)))
        if score < self.threshold:
            return None, score
        inverse = cv2.invertAffineTransform(matrix)
        xy = raw[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        z = raw[:, 2:3] * float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
        return np.concatenate([xy, z], axis=1).astype(np.float32), score


@register("face_landmarker", "mediapipe-facemesh")
def _build_facemesh(pretrained: bool = True, **overrides: object) -> FaceMesh:
    if not pretrained:
        raise ValueError("mediapipe-facemesh is a fixed TFLite model: it has no untrained form")
    return FaceMesh(**overrides)  # type: ignore[arg-type]

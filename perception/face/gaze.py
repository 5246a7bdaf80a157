"""Eye gaze from the MediaPipe iris model (TFLite) on eye crops placed by the face mesh.

Each eye is cropped as MediaPipe does (a square 2.3x the eye's width, upright along the eye line, the
right eye mirrored so both look like a left eye) and the iris model finds the iris centre. Gaze is the
iris centre's offset from the eye's centre, expressed as eye-in-head angles: an eyeball radius of 0.42
eye widths (12 mm against a ~29 mm eye opening) turns the offset into degrees. ``yaw`` > 0 looks towards
the image's right, ``pitch`` > 0 looks down; add the head pose for a direction relative to the camera.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from affectlens import weights
from perception.face.landmarks import _native_stderr_silenced

logger = logging.getLogger(__name__)

INPUT_SIZE = 64
ROI_SCALE = 2.3
EYEBALL_RADIUS = 0.42  # in eye widths
#: (outer, inner) mesh corners of the image-left and image-right eye.
EYES = ((33, 133), (263, 362))


@dataclass(frozen=True)
class Gaze:
    """Eye-in-head gaze in degrees (both eyes averaged) and the two iris centres in image pixels."""

    yaw: float
    pitch: float
    irises: tuple[tuple[float, float], tuple[float, float]]


def _eye_transform(outer: np.ndarray, inner: np.ndarray, mirror: bool) -> np.ndarray:
    """2x3 map from image pixels to the 64x64 eye crop (mirrored for the image-right eye)."""
    centre = (outer + inner) / 2
    width = float(np.linalg.norm(outer - inner))
    angle = float(np.degrees(np.arctan2(inner[1] - outer[1], inner[0] - outer[0])))
    if outer[0] > inner[0]:  # image-right eye: its line runs right to left
        angle = float(np.degrees(np.arctan2(outer[1] - inner[1], outer[0] - inner[0])))
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, INPUT_SIZE / (width * ROI_SCALE))
    matrix[:, 2] += np.array([INPUT_SIZE / 2 - centre[0], INPUT_SIZE / 2 - centre[1]])
    if mirror:
        matrix = np.array([[-1.0, 0.0, INPUT_SIZE], [0.0, 1.0, 0.0]]) @ np.vstack([matrix, [0.0, 0.0, 1.0]])
    return matrix


class IrisGaze:
    """Gaze of one face from its mesh points; the iris model runs once per eye."""

    name = "mediapipe-iris"

    def __init__(self, model_path: str | None = None, num_threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        found = weights.locate("mediapipe-iris-landmark", model_path)
        self.weight_files = {found.name: found.sha256}
        with _native_stderr_silenced():
            self.interpreter = Interpreter(model_path=str(found.path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._iris = next(d["index"] for d in self.interpreter.get_output_details() if d["shape"][-1] == 15)
        self._lock = threading.Lock()

    def _iris_centre(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        crop = cv2.warpAffine(image, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)
        with self._lock:
            self.interpreter.set_tensor(self._input, (crop.astype(np.float32) / 255.0)[None])
            self.interpreter.invoke()
            iris = self.interpreter.get_tensor(self._iris).reshape(5, 3)[0, :2].copy()
        inverse = cv2.invertAffineTransform(matrix)
        return inverse[:, :2] @ iris + inverse[:, 2]

    def __call__(self, image: np.ndarray, points: np.ndarray) -> Gaze:
        """Gaze from an RGB image and the face's 468x3 mesh points."""
        yaws, pitches, centres = [], [], []
        for k, (outer_i, inner_i) in enumerate(EYES):
            outer, inner = points[outer_i, :2].astype(np.float64), points[inner_i, :2].astype(np.float64)
            centre = self._iris_centre(image, _eye_transform(outer, inner, mirror=k == 1))
            width = float(np.linalg.norm(outer - inner)) + 1e-6
            axis = (inner - outer) / width if outer[0] < inner[0] else (outer - inner) / width  # points image-right
            normal = np.array([-axis[1], axis[0]])  # points down in the image
            offset = centre - (outer + inner) / 2
            yaws.append(np.degrees(np.arcsin(np.clip(offset @ axis / (EYEBALL_RADIUS * width), -1, 1))))
            pitches.append(np.degrees(np.arcsin(np.clip(offset @ normal / (EYEBALL_RADIUS * width), -1, 1))))
            centres.append((float(centre[0]), float(centre[1])))
        return Gaze(float(np.mean(yaws)), float(np.mean(pitches)), (centres[0], centres[1]))

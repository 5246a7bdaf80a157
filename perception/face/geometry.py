"""Face geometry from the 468-point mesh: head pose, eye openness and facial action units.

All measures are ratios of distances between mesh points divided by the interocular distance (outer eye
corners), so they do not depend on the face's size in the image. Points are (x, y, z) pixels with y down
and z away from the camera, as ``perception.face.landmarks.FaceMesh`` returns them; arrays are Nx468x3.

Action units are geometric *proxies* for FACS: each AU's measure is compared with its distribution on
neutral faces (mean and standard deviation over the neutral faces of FER2013 train, computed by
``scripts/calibrate_face_geometry.py`` into ``weights/face-geometry/neutral_reference.json``), and one
standard deviation in the AU's direction is one intensity step, clipped to 0-5. Within a video, a per-track
neutral baseline can replace the population mean (``baseline=``). ``AU_MEASURES`` lists which measure
stands for which AU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

import numpy as np

from affectlens import weights
from affectlens.types import AU_COLUMNS

# Mesh indices (MediaPipe Face Mesh). "a"/"b" are the two sides of the face: a = image left, b = image right
# on a frontal face.
EYE_OUTER_A, EYE_INNER_A, EYE_TOP_A, EYE_BOTTOM_A = 33, 133, 159, 145
EYE_OUTER_B, EYE_INNER_B, EYE_TOP_B, EYE_BOTTOM_B = 263, 362, 386, 374
BROW_OUTER_A, BROW_MID_A, BROW_INNER_A = 70, 105, 107
BROW_OUTER_B, BROW_MID_B, BROW_INNER_B = 300, 334, 336
MOUTH_A, MOUTH_B = 61, 291
LIP_TOP, LIP_INNER_TOP, LIP_INNER_BOTTOM, LIP_BOTTOM = 0, 13, 14, 17
NOSE_TIP, NOSE_BOTTOM, NOSE_ROOT = 1, 2, 168
CHIN, FOREHEAD = 152, 10
CHEEK_A, CHEEK_B = 50, 280

#: The 17 action units of the BRIEF, in this order everywhere.
AU_NAMES: Final[tuple[str, ...]] = AU_COLUMNS

#: AU -> (measure, direction): +1 when the AU raises the measure, -1 when it lowers it.
AU_MEASURES: Final[dict[str, tuple[str, int]]] = {
    "AU01": ("inner_brow_height", +1),  # inner brow raiser: inner brow above the inner eye corner
    "AU02": ("outer_brow_height", +1),  # outer brow raiser: outer brow above the outer eye corner
    "AU04": ("brow_gap", -1),  # brow lowerer: brows drawn together (and down)
    "AU05": ("eye_opening", +1),  # upper lid raiser: eyes opened wider
    "AU06": ("cheek_eye_distance", -1),  # cheek raiser: cheeks pushed up towards the eyes
    "AU07": ("lower_lid_drop", -1),  # lid tightener: lower lid raised towards the eye-corner line
    "AU09": ("nose_length", -1),  # nose wrinkler: nose root to nose bottom shortened
    "AU10": ("upper_lip_gap", -1),  # upper lip raiser: upper lip drawn up towards the nose
    "AU12": ("mouth_corner_lift", +1),  # lip corner puller: corners above the lip centre line
    "AU14": ("mouth_corner_depth", +1),  # dimpler: corners pulled back into the cheeks (mesh depth)
    "AU15": ("mouth_corner_lift", -1),  # lip corner depressor: corners below the lip centre line
    "AU17": ("chin_lip_distance", -1),  # chin raiser: chin boss pushed up towards the lower lip
    "AU20": ("mouth_width", +1),  # lip stretcher: mouth stretched sideways
    "AU23": ("lip_thickness", -1),  # lip tightener: red of the lips narrowed
    "AU25": ("lip_gap", +1),  # lips part
    "AU26": ("jaw_drop", +1),  # jaw drop: lower lip (carried by the jaw) away from the nose
    "AU45": ("eye_opening", -1),  # blink: eyes closed
}


def _dist(points: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(points[:, i, :2] - points[:, j, :2], axis=-1)


def face_axes(points: np.ndarray) -> np.ndarray:
    """Nx3x3 rotation matrices whose columns are the face's x (eye line), y (forehead to chin) and z axes."""
    x = points[:, EYE_OUTER_B] - points[:, EYE_OUTER_A]
    x /= np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9
    y = points[:, CHIN] - points[:, FOREHEAD]
    y -= (y * x).sum(-1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=-1, keepdims=True) + 1e-9
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def head_pose(points: np.ndarray, pitch_offset: float = 0.0) -> np.ndarray:
    """Nx3 (yaw, pitch, roll) in degrees from Nx468x3 mesh points.

    ``pitch_offset`` is subtracted from the pitch: the forehead-chin line of an upright face is not
    exactly vertical to the camera, and the calibration script measures by how much.
    """
    r = face_axes(points)
    x_axis, y_axis = r[:, :, 0], r[:, :, 1]
    yaw = np.degrees(np.arcsin(np.clip(-x_axis[:, 2], -1, 1)))
    pitch = np.degrees(np.arcsin(np.clip(y_axis[:, 2], -1, 1))) - pitch_offset
    roll = np.degrees(np.arctan2(x_axis[:, 1], x_axis[:, 0]))
    return np.stack([yaw, pitch, roll], axis=-1)


def interocular(points: np.ndarray) -> np.ndarray:
    """N interocular distances (outer eye corners), the unit of every geometric measure."""
    return np.linalg.norm(points[:, EYE_OUTER_B] - points[:, EYE_OUTER_A], axis=-1) + 1e-9


def eye_openness(points: np.ndarray) -> np.ndarray:
    """Nx2 eye aspect ratios (lid gap / eye width) for the two eyes; about 0.25-0.35 open, < 0.1 closed."""
    a = _dist(points, EYE_TOP_A, EYE_BOTTOM_A) / (_dist(points, EYE_OUTER_A, EYE_INNER_A) + 1e-9)
    b = _dist(points, EYE_TOP_B, EYE_BOTTOM_B) / (_dist(points, EYE_OUTER_B, EYE_INNER_B) + 1e-9)
    return np.stack([a, b], axis=-1)


def _upright(points: np.ndarray) -> np.ndarray:
    """Points rotated so the eye line is horizontal (removes roll before vertical measures)."""
    r = face_axes(points)
    centre = points.mean(axis=1, keepdims=True)
    return np.einsum("nkd,nde->nke", points - centre, r)


def geometric_measures(points: np.ndarray) -> dict[str, np.ndarray]:
    """The named measures behind the AUs, each N values in interocular units (see ``AU_MEASURES``)."""
    p = _upright(points)
    unit = interocular(points)

    def vgap(upper: int, lower: int) -> np.ndarray:  # how far ``lower`` lies below ``upper``
        return (p[:, lower, 1] - p[:, upper, 1]) / unit

    def mean2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a + b) / 2

    lip_centre_y = (p[:, LIP_INNER_TOP, 1] + p[:, LIP_INNER_BOTTOM, 1]) / 2
    corner_y = (p[:, MOUTH_A, 1] + p[:, MOUTH_B, 1]) / 2
    return {
        "inner_brow_height": mean2(vgap(BROW_INNER_A, EYE_INNER_A), vgap(BROW_INNER_B, EYE_INNER_B)),
        "outer_brow_height": mean2(vgap(BROW_OUTER_A, EYE_OUTER_A), vgap(BROW_OUTER_B, EYE_OUTER_B)),
        "brow_gap": np.linalg.norm(p[:, BROW_INNER_B, :2] - p[:, BROW_INNER_A, :2], axis=-1) / unit,
        "eye_opening": eye_openness(points).mean(axis=-1),
        "cheek_eye_distance": mean2(vgap(EYE_BOTTOM_A, CHEEK_A), vgap(EYE_BOTTOM_B, CHEEK_B)),
        "lower_lid_drop": mean2(
            (p[:, EYE_BOTTOM_A, 1] - (p[:, EYE_OUTER_A, 1] + p[:, EYE_INNER_A, 1]) / 2) / unit,
            (p[:, EYE_BOTTOM_B, 1] - (p[:, EYE_OUTER_B, 1] + p[:, EYE_INNER_B, 1]) / 2) / unit,
        ),
        "nose_length": vgap(NOSE_ROOT, NOSE_BOTTOM),
        "upper_lip_gap": vgap(NOSE_BOTTOM, LIP_TOP),
        "mouth_corner_lift": (lip_centre_y - corner_y) / unit,
        "mouth_corner_depth": ((p[:, MOUTH_A, 2] + p[:, MOUTH_B, 2]) / 2 - p[:, LIP_INNER_TOP, 2]) / unit,
        "mouth_width": np.linalg.norm(p[:, MOUTH_B, :2] - p[:, MOUTH_A, :2], axis=-1) / unit,
        "chin_lip_distance": vgap(LIP_BOTTOM, CHIN),
        "lip_thickness": mean2(vgap(LIP_TOP, LIP_INNER_TOP), vgap(LIP_INNER_BOTTOM, LIP_BOTTOM)),
        "lip_gap": vgap(LIP_INNER_TOP, LIP_INNER_BOTTOM),
        "jaw_drop": vgap(NOSE_BOTTOM, LIP_BOTTOM),  # the chin itself is often cut off in tight crops
    }


def action_units(
    points: np.ndarray,
    reference: dict[str, tuple[float, float]],
    baseline: dict[str, float] | None = None,
) -> np.ndarray:
    """Nx17 AU intensities in [0, 5], ordered as ``AU_NAMES``.

    Each AU is ``direction * (measure - neutral mean) / neutral std``, clipped to 0-5, with ``reference``
    the neutral (mean, std) per measure; ``baseline`` (a per-track neutral measure, e.g. the median over a
    person's calm frames) replaces the population mean where given.
    """
    measures = geometric_measures(points)
    out = np.zeros((points.shape[0], len(AU_NAMES)), np.float32)
    for k, au in enumerate(AU_NAMES):
        measure, direction = AU_MEASURES[au]
        mean, std = reference[measure]
        if baseline is not None and measure in baseline:
            mean = baseline[measure]
        out[:, k] = np.clip(direction * (measures[measure] - mean) / std, 0.0, 5.0)
    return out


@dataclass(frozen=True)
class FaceGeometryResult:
    """Pose (yaw, pitch, roll degrees; see ``head_pose``), eye aspect ratios and AU intensities of one face."""

    yaw: float
    pitch: float
    roll: float
    eye_openness: tuple[float, float]
    aus: dict[str, float]


class FaceGeometry:
    """Head pose, eye openness and AUs from mesh points, with the shipped neutral reference."""

    name = "mesh-geometry"

    def __init__(self, reference_path: str | None = None) -> None:
        found = weights.locate("face-geometry-neutral", reference_path)
        data = json.loads(found.path.read_text())
        self.reference: dict[str, tuple[float, float]] = {k: (m, s) for k, (m, s) in data["measures"].items()}
        self.pitch_offset = float(data["pitch_offset"])
        self.weight_files = {found.name: found.sha256}

    def __call__(self, points: np.ndarray) -> list[FaceGeometryResult]:
        """One result per face of the Nx468x3 ``points``."""
        if points.shape[0] == 0:
            return []
        pose = head_pose(points, self.pitch_offset)
        eyes = eye_openness(points)
        aus = action_units(points, self.reference)
        return [
            FaceGeometryResult(
                yaw=float(pose[i, 0]),
                pitch=float(pose[i, 1]),
                roll=float(pose[i, 2]),
                eye_openness=(float(eyes[i, 0]), float(eyes[i, 1])),
                aus={au: float(v) for au, v in zip(AU_NAMES, aus[i], strict=True)},
            )
            for i in range(points.shape[0])
        ]

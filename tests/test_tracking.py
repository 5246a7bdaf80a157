"""Tracking: stable ids through crossings and short occlusions; smoothing and abstention."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from affectlens.labels import CANONICAL_EMOTIONS
from perception.face.tracking import FaceTimeline, FaceTracker, TrackSmoother, iou
from tests.conftest import require_shared

W, H, SIDE, FRAMES = 640, 360, 120, 30


def _paths(k: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Top-left corners of faces A (left to right, higher) and B (right to left, lower) at frame k."""
    t = k / (FRAMES - 1)
    return (int(40 + 440 * t), 50), (int(480 - 440 * t), 150)


def _frame(faces: list[np.ndarray | None], k: int) -> np.ndarray:
    canvas = np.full((H, W, 3), 128, np.uint8)
    for face, (x, y) in zip(faces, _paths(k), strict=True):
        if face is not None:
            canvas[y : y + SIDE, x : x + SIDE] = face
    return canvas


def _ids_by_identity(frames: list[np.ndarray], boxes_per_frame: list[np.ndarray], tracker: FaceTracker) -> dict:
    """Run the tracker; return {"A": ids seen at A's position, "B": ...}."""
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for k, (image, boxes) in enumerate(zip(frames, boxes_per_frame, strict=True)):
        ids = tracker.update(image, boxes)
        for name, (x, y) in zip("AB", _paths(k), strict=True):
            centre = np.array([x + SIDE / 2, y + SIDE / 2])
            for box, track_id in zip(boxes, ids, strict=True):
                if np.linalg.norm((box[:2] + box[2:]) / 2 - centre) < SIDE / 3:
                    seen[name].add(track_id)
    return seen


def test_tracker_keeps_ids_through_a_crossing_and_an_occlusion() -> None:
    rng = np.random.default_rng(0)
    faces = [cv2.GaussianBlur(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8), (9, 9), 3) for _ in range(2)]
    frames, boxes = [], []
    for k in range(FRAMES):
        hidden = 10 <= k <= 12  # A vanishes for three frames
        frames.append(_frame([None if hidden else faces[0], faces[1]], k))
        visible = [(x, y) for i, (x, y) in enumerate(_paths(k)) if not (i == 0 and hidden)]
        boxes.append(np.array([[x, y, x + SIDE, y + SIDE] for x, y in visible], np.float32))
    seen = _ids_by_identity(frames, boxes, FaceTracker())
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"], seen


def test_tracks_expire_after_max_missed() -> None:
    tracker = FaceTracker(max_missed=2)
    image = np.full((100, 100, 3), 100, np.uint8)
    first = tracker.update(image, np.array([[10, 10, 50, 50]], np.float32))
    for _ in range(3):
        tracker.update(image, np.zeros((0, 4), np.float32))
    again = tracker.update(image, np.array([[10, 10, 50, 50]], np.float32))
    assert first == [0] and again == [1]


def test_iou_of_identical_and_disjoint_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(iou(boxes, boxes), np.eye(2))


def test_smoother_damps_a_one_frame_flip_and_abstains() -> None:
    smoother = TrackSmoother(alpha=0.4, min_confidence=0.45, min_quality=0.3)
    happy = np.eye(7)[CANONICAL_EMOTIONS.index("happiness")] * 0.9 + 0.1 / 7
    sad = np.eye(7)[CANONICAL_EMOTIONS.index("sadness")] * 0.9 + 0.1 / 7
    for _ in range(5):
        _, label = smoother.update(0, happy, quality=0.9)
    _, label = smoother.update(0, sad, quality=0.9)  # one odd frame does not flip the label
    assert label == "happiness"
    _, label = smoother.update(0, happy, quality=0.1)  # a poor face: abstain rather than guess
    assert label == "uncertain"
    flat = np.full(7, 1 / 7)
    _, label = smoother.update(1, flat, quality=0.9)  # no class stands out: abstain
    assert label == "uncertain"


@pytest.mark.weights
@pytest.mark.data
def test_real_faces_swap_places_and_keep_their_ids(analyzer) -> None:
    data = np.load(require_shared("fer2013.npz"))
    test = data["images"][data["split"] == 1]
    faces = [
        np.repeat(cv2.resize(test[i], (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, 2) for i in (0, 7)
    ]
    timeline = FaceTimeline()
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for k in range(FRAMES):
        hidden = 10 <= k <= 12
        image = _frame([None if hidden else faces[0], faces[1]], k)
        observed = timeline(image, analyzer.face(image))
        for name, (x, y) in zip("AB", _paths(k), strict=True):
            centre = np.array([x + SIDE / 2, y + SIDE / 2])
            for face in observed:
                box = np.array(face.box)
                if np.linalg.norm((box[:2] + box[2:]) / 2 - centre) < SIDE / 3:
                    seen[name].add(face.track_id)
                    assert face.state is not None and face.smoothed is not None
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"], seen

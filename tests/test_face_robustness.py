"""Hard face inputs: tiny, blurred, grey, 4K, many faces, a half-hidden face. No crash, sensible answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.weights

FACE = (slice(40, 200), slice(160, 290))  # the astronaut's head in the 512x512 portrait


def test_tiny_face_is_found_with_low_quality(analyzer, portrait: np.ndarray) -> None:
    big = analyzer.analyze(portrait).faces[0].quality.score
    tiny = cv2.resize(portrait, (96, 96), interpolation=cv2.INTER_AREA)  # the face is ~20 px wide
    faces = analyzer.analyze(tiny).faces
    assert len(faces) <= 1
    if faces:
        assert faces[0].quality.size < 30 and faces[0].quality.score < big


def test_blur_lowers_quality(analyzer, portrait: np.ndarray) -> None:
    sharp = analyzer.analyze(portrait).faces[0].quality
    blurred = analyzer.analyze(cv2.GaussianBlur(portrait, (0, 0), 6)).faces
    assert blurred, "a blurred face should still be found"
    assert blurred[0].quality.sharpness < sharp.sharpness / 5 and blurred[0].quality.score < sharp.score


def test_grey_image_works(analyzer, portrait: np.ndarray) -> None:
    grey = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    faces = analyzer.analyze(grey).faces
    assert len(faces) == 1 and faces[0].expression.label == "happiness"


def test_4k_frame_with_one_face(analyzer, portrait: np.ndarray) -> None:
    canvas = np.full((2160, 3840, 3), 90, np.uint8)
    canvas[800:1312, 1600:2112] = portrait
    faces = analyzer.analyze(canvas).faces
    assert len(faces) == 1
    x1, y1, x2, y2 = faces[0].box
    assert 1600 < x1 < x2 < 2112 and 800 < y1 < y2 < 1312


def test_many_faces(analyzer, portrait: np.ndarray) -> None:
    head = cv2.resize(portrait[FACE], (130, 160))
    canvas = np.full((3 * 200, 4 * 180, 3), 120, np.uint8)
    for r in range(3):
        for c in range(4):
            canvas[r * 200 + 20 : r * 200 + 180, c * 180 + 25 : c * 180 + 155] = head
    faces = analyzer.analyze(canvas).faces
    assert len(faces) == 12
    assert sum(f.expression.label == "happiness" for f in faces) >= 10


def test_half_hidden_face_is_still_one_face(analyzer, portrait: np.ndarray) -> None:
    covered = portrait.copy()
    covered[125:200, 160:300] = 0  # mouth and chin hidden
    faces = analyzer.analyze(covered).faces
    assert len(faces) == 1
    assert sum(faces[0].expression.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert 0.0 <= faces[0].quality.score <= 1.0


def test_turned_head_reads_as_yaw(analyzer, portrait: np.ndarray) -> None:
    """A horizontal squeeze of one half fakes a turn: pose must move, quality must fall with frontality."""
    straight = analyzer.analyze(portrait).faces[0]
    h, w = portrait.shape[:2]
    left, right = portrait[:, : w // 2 - 30], portrait[:, w // 2 - 30 :]
    turned = np.concatenate([cv2.resize(left, (left.shape[1] // 2, h)), right], axis=1)
    faces = analyzer.analyze(turned).faces
    assert faces and faces[0].pose is not None and straight.pose is not None
    assert abs(faces[0].pose.yaw - straight.pose.yaw) > 5

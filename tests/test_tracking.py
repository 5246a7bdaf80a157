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


def _two_real_faces() -> list[np.ndarray]:
    """Two FER2013 test faces (different people), grey as RGB, SIDE x SIDE."""
    data = np.load(require_shared("fer2013.npz"))
    test = data["images"][data["split"] == 1]
    return [
        np.repeat(cv2.resize(test[i], (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)[..., None], 3, 2) for i in (0, 7)
    ]


def _who(k: int, box: np.ndarray | tuple[float, ...]) -> str | None:
    """ "A" or "B" when ``box`` (XYXY) is centred on that face's position at frame k, else None."""
    box = np.asarray(box)
    for name, (x, y) in zip("AB", _paths(k), strict=True):
        if np.linalg.norm((box[:2] + box[2:]) / 2 - np.array([x + SIDE / 2, y + SIDE / 2])) < SIDE / 3:
            return name
    return None


def _ids_by_identity(frames: list[np.ndarray], boxes_per_frame: list[np.ndarray], tracker: FaceTracker) -> dict:
    """Run the tracker; return {"A": ids seen at A's position, "B": ...}."""
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for k, (image, boxes) in enumerate(zip(frames, boxes_per_frame, strict=True)):
        ids = tracker.update(image, boxes)
        for box, track_id in zip(boxes, ids, strict=True):
            if (name := _who(k, box)) is not None:
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
    faces = _two_real_faces()
    timeline = FaceTimeline()
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    for k in range(FRAMES):
        hidden = 10 <= k <= 12
        image = _frame([None if hidden else faces[0], faces[1]], k)
        observed = timeline(image, analyzer.face(image))
        for face in observed:
            if (name := _who(k, face.box)) is not None:
                seen[name].add(face.track_id)
                assert face.state is not None and face.smoothed is not None
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"], seen


@pytest.mark.weights
@pytest.mark.data
def test_stream_follows_swapping_faces_between_key_frames(analyzer) -> None:
    """Video mode: detection on key frames only, the mesh follows both faces in between, a face hidden for
    three frames is picked up again as soon as it returns, and ids stay with their person."""
    faces = _two_real_faces()
    stream = analyzer.face.stream(keyframe_interval=15)
    timeline = FaceTimeline()
    seen: dict[str, set[int]] = {"A": set(), "B": set()}
    found = {"A": 0, "B": 0}
    images = [_frame([None if 10 <= k <= 12 else faces[0], faces[1]], k) for k in range(FRAMES)]
    for start in range(0, FRAMES, 4):  # chunks of 4 frames, as the analyzer batches them
        chunk = images[start : start + 4]
        for k, (image, observed) in enumerate(zip(chunk, stream(chunk), strict=True), start=start):
            observed = timeline(image, observed)
            for face in observed:
                if (name := _who(k, face.box)) is not None:
                    seen[name].add(face.track_id)
                    found[name] += 1
                    assert face.landmarks is not None and face.aus is not None and face.pose is not None
    assert found["A"] >= FRAMES - 3 - 1 and found["B"] >= FRAMES - 1, found  # every visible frame, or all but one
    assert len(seen["A"]) == 1 and len(seen["B"]) == 1 and seen["A"] != seen["B"], seen
    # Key frames (0, 15) plus the frames spent looking for A while hidden; far fewer than one per frame.
    assert stream.detections <= FRAMES // 2, stream.detections


@pytest.mark.weights
def test_stream_matches_per_frame_detection_on_the_sample_video(analyzer, sample_video) -> None:
    """Following with the mesh gives the boxes and expressions that detecting on every frame gives."""
    from perception.media import iter_video_frames

    frames = [f.image for f in iter_video_frames(sample_video, fps=None)]
    stream = analyzer.face.stream(keyframe_interval=10)
    streamed = [faces for i in range(0, len(frames), 8) for faces in stream(frames[i : i + 8])]
    per_frame = [analyzer.face(image) for image in frames]
    assert [len(f) for f in streamed] == [len(f) for f in per_frame] == [1] * len(frames)
    overlaps = [
        float(iou(np.array([a[0].box]), np.array([b[0].box]))[0, 0]) for a, b in zip(streamed, per_frame, strict=True)
    ]
    assert min(overlaps) > 0.7, overlaps
    agree = np.mean([a[0].expression.label == b[0].expression.label for a, b in zip(streamed, per_frame, strict=True)])
    assert agree >= 0.8, agree
    assert stream.detections < len(frames) / 3, stream.detections


def test_stream_rejects_a_bad_keyframe_interval(analyzer) -> None:
    with pytest.raises(ValueError, match="keyframe_interval"):
        analyzer.face.stream(keyframe_interval=0)


@pytest.mark.weights
def test_track_baseline_measures_aus_against_the_persons_calm_face_and_sees_closed_eyes(
    analyzer, portrait: np.ndarray
) -> None:
    """Once a track has shown enough calm frames, its AUs are relative to its own resting face (so its resting
    face scores zero), a raised mouth corner still scores AU12, and lids that meet read as closed eyes."""
    from dataclasses import replace

    from affectlens.types import EmotionPrediction
    from perception.face.geometry import (
        EYE_BOTTOM_A,
        EYE_BOTTOM_B,
        EYE_TOP_A,
        EYE_TOP_B,
        MOUTH_A,
        MOUTH_B,
        eye_openness,
    )

    face = analyzer.face(portrait)[0]
    assert face.landmarks is not None and face.au_reference == "population"
    neutral = EmotionPrediction.from_vector(np.eye(7)[CANONICAL_EMOTIONS.index("neutral")] * 0.9 + 0.1 / 7, "test")
    rest = replace(face, expression=neutral, quality=replace(face.quality, score=0.9))
    timeline = FaceTimeline(geometry=analyzer.face.geometry)
    seen = [timeline(portrait, (rest,))[0] for _ in range(6)]
    assert seen[0].au_reference == "population" and seen[-1].au_reference == "track"
    assert seen[-1].aus is not None and max(seen[-1].aus.values()) < 1e-3, seen[-1].aus
    assert seen[-1].eyes_closed is False

    smile = face.landmarks.copy()
    lift = 0.08 * float(np.linalg.norm(smile[263, :2] - smile[33, :2]))
    smile[[MOUTH_A, MOUTH_B], 1] -= lift
    after = timeline(portrait, (replace(rest, landmarks=smile),))[0]
    assert after.aus is not None and after.aus["AU12"] >= 1.0, after.aus

    shut = face.landmarks.copy()
    for top, bottom in ((EYE_TOP_A, EYE_BOTTOM_A), (EYE_TOP_B, EYE_BOTTOM_B)):
        shut[[top, bottom]] = shut[[top, bottom]].mean(0)
    closed = float(eye_openness(shut[None]).mean())
    blink = timeline(portrait, (replace(rest, landmarks=shut, eye_openness=(closed, closed)),))[0]
    assert blink.eyes_closed is True


@pytest.mark.weights
@pytest.mark.data
def test_stream_finds_a_face_that_enters_within_one_key_frame_interval(analyzer) -> None:
    faces = _two_real_faces()
    stream = analyzer.face.stream(keyframe_interval=6)
    counts = []
    for k in range(FRAMES):
        image = _frame([faces[0] if k >= 8 else None, faces[1]], k)  # A walks in at frame 8
        counts.append(len(stream([image])[0]))
    first_two = counts.index(2)
    assert 8 <= first_two <= 8 + 6 and all(c == 2 for c in counts[first_two:]), counts
    assert all(c == 1 for c in counts[:8]), counts

"""The face pipeline and Analyzer on real shipped weights, plus wiring checks with tiny injected parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.registry import create_face_expression
from affectlens.types import AnalysisResult
from perception.face.detector import Detections
from perception.face.pipeline import FacePipeline
from tests.conftest import validate


class FixedDetector:
    """Returns the same boxes for every image (a tiny stand-in for a real detector)."""

    def __init__(self, boxes: list[list[float]], name: str = "fixed") -> None:
        self.name = name
        self.boxes = np.array(boxes, np.float32).reshape(-1, 4)

    def detect(self, image: np.ndarray) -> Detections:
        return Detections(self.boxes, np.full(len(self.boxes), 0.9, np.float32), None)


def test_pipeline_wires_injected_parts_without_weights() -> None:
    pipeline = FacePipeline(
        detector=FixedDetector([[10, 10, 50, 60], [60, 10, 90, 40]]),
        expression=create_face_expression(pretrained=False),
    )
    faces = pipeline(np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8))
    assert [f.index for f in faces] == [0, 1]
    assert faces[0].box == (10.0, 10.0, 50.0, 60.0)  # largest first
    for face in faces:
        assert set(face.expression.probabilities) == set(CANONICAL_EMOTIONS)
        assert 0.0 <= face.quality.score <= 1.0 and face.quality.mesh is None
    assert pipeline.describe() == {
        "detector": "fixed",
        "fallback": None,
        "landmarker": None,
        "expression": "affectlens-expression",
        "geometry": None,
        "gaze": None,
    }


def test_fallback_runs_only_when_the_main_detector_finds_nothing() -> None:
    expression = create_face_expression(pretrained=False)
    image = np.zeros((64, 64, 3), np.uint8)
    used = FacePipeline(FixedDetector([]), expression, fallback=FixedDetector([[0, 0, 32, 32]], "backup"))
    assert len(used(image)) == 1
    found, from_fallback = used.detect(image)
    assert from_fallback and len(found) == 1
    unused = FacePipeline(
        FixedDetector([[0, 0, 40, 40]]), expression, fallback=FixedDetector([[0, 0, 32, 32]], "backup")
    )
    assert unused.detect(image)[1] is False


@pytest.mark.weights
def test_astronaut_has_one_happy_face(analyzer, portrait: np.ndarray, result_schema: dict) -> None:
    result = analyzer.analyze(portrait)
    assert result.num_faces == 1
    face = result.faces[0]
    assert face.expression.label == "happiness" and face.expression.confidence > 0.8  # calibrated: not 0.99
    x1, y1, x2, y2 = face.box
    assert 160 < x1 < 200 and 40 < y1 < 80 and 250 < x2 < 290 and 160 < y2 < 200  # her face, not the flag
    assert face.landmarks is not None and face.landmarks.shape == (468, 3)
    inside = (face.landmarks[:, 0] > x1 - 10) & (face.landmarks[:, 0] < x2 + 10)
    assert inside.mean() > 0.95
    assert face.keypoints is not None and face.keypoints[0, 0] < face.keypoints[1, 0]  # left eye left of right eye
    assert face.quality.score > 0.7
    assert set(result.weights) == {
        "centerface", "haar-frontalface", "mediapipe-face-landmark", "affectlens-expression", "face-geometry-neutral",
        "mediapipe-iris-landmark", "affectlens-expression-card",
    }  # fmt: skip
    assert face.pose is not None and abs(face.pose.yaw) < 10 and abs(face.pose.roll) < 10 and abs(face.pose.pitch) < 15
    assert face.aus is not None and face.aus["AU12"] > 1.0  # her smile pulls the lip corners up
    assert face.eye_openness is not None and 0.15 < min(face.eye_openness) < 0.4
    validate(result, result_schema)


@pytest.mark.weights
def test_every_face_in_the_frame_is_found(analyzer, portrait: np.ndarray) -> None:
    two = np.concatenate([portrait, portrait[:, ::-1]], axis=1)
    result = analyzer.analyze(two)
    assert result.num_faces == 2
    assert all(f.expression.label == "happiness" for f in result.faces)
    centres = sorted((f.box[0] + f.box[2]) / 2 for f in result.faces)
    assert centres[0] < 512 < centres[1]


@pytest.mark.weights
def test_image_without_a_face_is_an_empty_result_with_the_reason(analyzer) -> None:
    sky = np.tile(np.linspace(80, 200, 256, dtype=np.uint8)[:, None, None], (1, 256, 3))
    result = analyzer.analyze(sky)
    assert result.num_faces == 0 and result.mean_expression() is None
    assert result.warnings == ("<array>: no face found",)
    assert result.to_dict()["summary"] is None


@pytest.mark.weights
def test_haar_boxes_need_the_mesh_to_confirm_a_face(analyzer) -> None:
    """A checkerboard can fool the cascade; the mesh must veto what is not a face."""
    board = (np.indices((480, 480)).sum(0) // 24 % 2 * 255).astype(np.uint8)
    result = analyzer.analyze(np.stack([board] * 3, axis=2))
    assert result.num_faces == 0


@pytest.mark.weights
def test_video_is_sampled_by_time(analyzer, sample_video: Path, result_schema: dict) -> None:
    result: AnalysisResult = analyzer.analyze(sample_video, fps=5)
    assert result.kind == "video" and (result.width, result.height) == (480, 360)
    assert result.fps == pytest.approx(10.0) and result.duration == pytest.approx(4.0, abs=0.15)
    assert len(result.frames) == 20
    times = [f.time for f in result.frames]
    assert np.allclose(np.diff(times), 0.2, atol=1e-3)
    assert all(len(f.faces) == 1 for f in result.frames)
    assert result.mean_expression()["happiness"] > 0.8  # calibrated probabilities: confident, not 0.99
    frame = result.to_dataframe()
    assert len(frame) == 20 and frame["label"].eq("happiness").all()
    validate(result, result_schema)


@pytest.mark.weights
def test_max_frames_and_every_frame(analyzer, sample_video: Path) -> None:
    assert len(analyzer.analyze(sample_video, fps=None, max_frames=7).frames) == 7
    assert len(analyzer.analyze_video(sample_video, fps=None).frames) == 40


@pytest.mark.weights
def test_video_results_can_leave_the_meshes_out(analyzer, sample_video: Path) -> None:
    """``keep_landmarks=False``: ``on_frame`` still sees each mesh, the result keeps none (flat memory)."""
    seen: list[bool] = []
    result = analyzer.analyze_video(
        sample_video, fps=5, max_frames=6, audio=False, keep_landmarks=False,
        on_frame=lambda frame, res: seen.extend(f.landmarks is not None for f in res.faces),
    )  # fmt: skip
    assert seen and all(seen)
    assert result.num_faces == len(seen) and all(f.landmarks is None for f in result.faces)
    assert all(f.aus is not None and f.pose is not None for f in result.faces)  # everything else is kept

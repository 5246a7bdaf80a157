"""Result types: frozen, JSON round-trip against the published schema, DataFrame view."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import AnalysisResult, EmotionPrediction, FaceObservation, FaceQuality, FrameResult
from tests.conftest import validate


def _face(index: int, label_index: int) -> FaceObservation:
    vector = np.full(7, 0.05)
    vector[label_index] = 0.7
    return FaceObservation(
        index=index,
        box=(1.0, 2.0, 30.0, 40.0),
        detection_score=0.9,
        expression=EmotionPrediction.from_vector(vector, "tiny"),
        quality=FaceQuality(score=0.5 + 0.1 * index, size=28.0, sharpness=120.0, detection=0.9),
        keypoints=np.zeros((5, 2), np.float32),
        landmarks=np.ones((468, 3), np.float32),
    )


def _result() -> AnalysisResult:
    frames = (FrameResult(0, 0.0, (_face(0, 1), _face(1, 6))), FrameResult(5, 0.5, ()))
    return AnalysisResult("clip.mp4", "video", 64, 48, 10.0, 1.0, frames, {"detector": "tiny"}, {"tiny": "0" * 64})


def test_results_are_frozen() -> None:
    result = _result()
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.source = "other"  # type: ignore[misc]


def test_to_dict_is_json_and_matches_the_schema(result_schema: dict) -> None:
    result = _result()
    payload = json.loads(result.to_json(include_landmarks=True))
    validate(payload, result_schema)
    assert payload["num_faces"] == 2 and payload["num_frames"] == 2
    assert payload["frames"][0]["faces"][0]["expression"]["label"] == "happiness"
    assert len(payload["frames"][0]["faces"][0]["landmarks"]) == 468
    assert "landmarks" not in result.to_dict()["frames"][0]["faces"][0]


def test_mean_expression_weights_by_quality() -> None:
    mean = _result().mean_expression()
    assert mean is not None and pytest.approx(sum(mean.values())) == 1.0
    # quality 0.5 for happiness, 0.6 for anger: anger wins the weighted mean
    assert max(mean, key=mean.__getitem__) == "anger"


def test_dataframe_has_one_row_per_face() -> None:
    frame = _result().to_dataframe()
    assert list(frame.columns[-7:]) == list(CANONICAL_EMOTIONS)
    assert len(frame) == 2 and frame["label"].tolist() == ["happiness", "anger"]
    assert frame["time"].tolist() == [0.0, 0.0]


def test_schema_rejects_a_wrong_label(result_schema: dict) -> None:
    import jsonschema

    payload = _result().to_dict()
    payload["frames"][0]["faces"][0]["expression"]["label"] = "grumpy"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, result_schema)


def test_distribution_must_have_seven_classes() -> None:
    with pytest.raises(ValueError, match="expected 7 probabilities"):
        EmotionPrediction.from_vector(np.ones(3) / 3, "tiny")

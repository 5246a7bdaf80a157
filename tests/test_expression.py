"""The mini-Xception port: TensorFlow 'same' pooling, label order, and the FER2013 figure it reproduces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from affectlens.labels import CANONICAL_EMOTIONS
from perception.face.expression import FER_LABELS, MiniXception, _TFSameMaxPool, square_crop


def test_tf_same_pool_pads_at_the_bottom_right_like_tensorflow() -> None:
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = _TFSameMaxPool()(x)
    # TF 'same' on 4x4, kernel 3, stride 2: windows start at 0 and 2, the second one reading the pad row/col.
    assert out.shape == (1, 1, 2, 2)
    assert out.flatten().tolist() == [10.0, 11.0, 14.0, 15.0]
    odd = _TFSameMaxPool()(torch.zeros(1, 1, 15, 15))
    assert odd.shape == (1, 1, 8, 8)


def test_mini_xception_shapes_and_size() -> None:
    model = MiniXception().eval()
    assert model(torch.zeros(3, 1, 64, 64)).shape == (3, 7)
    assert sum(p.numel() for p in model.parameters()) < 60_000  # the BRIEF's 58k-parameter model


def test_fer_label_order_maps_onto_canonical_names() -> None:
    from affectlens.registry import create_face_expression

    model = create_face_expression(pretrained=False)
    # fer outputs angry, disgust, fear, happy, sad, surprise, neutral; canonical order is
    # neutral, happiness, sadness, surprise, fear, disgust, anger.
    assert FER_LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert model._order == [6, 3, 4, 5, 2, 1, 0]
    logits = np.eye(7, dtype=np.float32)[[3]] * 50  # "happy" only
    assert CANONICAL_EMOTIONS[int(np.argmax(logits[:, model._order]))] == "happiness"


def test_square_crop_pads_outside_the_image() -> None:
    image = np.full((10, 10), 7, np.uint8)
    crop = square_crop(image, np.array([-5.0, 0.0, 5.0, 10.0]))
    assert crop.shape == (10, 10)
    assert (crop[:, :5] == 0).all() and (crop[:, 5:] == 7).all()


@pytest.mark.weights
@pytest.mark.data
@pytest.mark.slow
def test_port_reproduces_fer2013_test_accuracy(fer2013_npz: Path, tmp_path: Path) -> None:
    """Through the real surface: export the test split as an image folder, run `affectlens eval --json`."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "fer2013-test"
    subprocess.run(
        [
            sys.executable,
            str(repo / "scripts" / "export_fer2013.py"),
            "--npz",
            str(fer2013_npz),
            "--split",
            "test",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "affectlens.cli", "eval", "face-expression", "--data", str(out), "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    report = json.loads(proc.stdout)
    assert {"task", "n", "accuracy", "macro_f1", "weighted_f1", "per_class", "excluded"} <= set(report)
    assert report["task"] == "face-expression" and report["n"] == 7178
    assert abs(report["accuracy"] - 0.654) <= 0.01, report["accuracy"]
    assert report["macro_f1"] > 0.6
    # Valence/arousal signs on real faces: pleasant vs unpleasant, activated vs low-energy.
    affect = report["affect_by_class"]
    assert affect["happiness"]["valence"] > 0.3
    assert all(affect[e]["valence"] < -0.2 for e in ("sadness", "fear", "disgust", "anger"))
    assert affect["surprise"]["arousal"] > affect["neutral"]["arousal"] + 0.3
    assert affect["anger"]["arousal"] > affect["sadness"]["arousal"]

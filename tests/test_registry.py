"""One registry per component kind: every registered name builds and runs on a tiny input."""

from __future__ import annotations

import numpy as np
import pytest

from affectlens.errors import RegistryError
from affectlens.registry import COMPONENT_KINDS, create, default_model, list_models, register

ALL_NAMES = [(kind, name) for kind in COMPONENT_KINDS for name in list_models(kind)]  # type: ignore[arg-type]


def test_every_kind_has_its_default_registered() -> None:
    for kind in COMPONENT_KINDS:
        assert default_model(kind) in list_models(kind)  # type: ignore[arg-type]


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(RegistryError, match=r"unknown face_detector 'nope'; registered: centerface, haar"):
        create("face_detector", "nope")


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(RegistryError, match="unknown component kind"):
        list_models("voice")  # type: ignore[arg-type]


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(RegistryError, match="registered twice"):
        register("face_detector", "centerface")(lambda pretrained=True: None)


@pytest.mark.weights
@pytest.mark.parametrize(("kind", "name"), ALL_NAMES, ids=[f"{k}:{n}" for k, n in ALL_NAMES])
def test_every_registered_component_builds_and_runs(kind: str, name: str, portrait: np.ndarray) -> None:
    component = create(kind, name)  # type: ignore[arg-type]
    assert component.name == name
    if kind == "face_detector":
        found = component.detect(portrait)
        assert len(found) >= 1 and found.boxes.shape[1] == 4
    elif kind == "face_landmarker":
        points, score = component(portrait, np.array([181.0, 58.0, 270.0, 178.0]), None)
        assert points is not None and points.shape == (468, 3) and score > 0.5
    else:
        probs = component.predict_batch(np.stack([component.preprocess(portrait[58:178, 181:270])]))
        assert probs.shape == (1, 7) and np.isclose(probs.sum(), 1.0, atol=1e-5)


def test_untrained_expression_model_builds_offline() -> None:
    model = create("face_expression", "fer-mini-xception", pretrained=False)
    probs = model.predict_batch(np.zeros((2, 64, 64), np.float32))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-5)

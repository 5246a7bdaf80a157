"""One registry per component kind: every registered name builds and runs on a tiny input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectlens import weights
from affectlens.errors import RegistryError
from affectlens.registry import COMPONENT_KINDS, create, default_model, list_models, register


def run_voice_component(kind: str, component: object) -> None:
    """Run a voice component on one second of a RAVDESS-like tone (no data needed)."""
    t = np.arange(16000) / 16000
    audio = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2).astype(np.float32)
    if kind == "vad":
        assert isinstance(component(audio), list)  # type: ignore[operator]
    elif kind == "asr":
        assert isinstance(component.transcribe(audio), str)  # type: ignore[attr-defined]
    elif kind == "speech_emotion":
        prediction = component.predict(audio)  # type: ignore[attr-defined]
        assert np.isclose(sum(prediction.probabilities.values()), 1.0, atol=1e-5)
    else:
        raise AssertionError(f"no smoke test for kind {kind!r}")


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
def test_every_registered_component_builds_and_runs(kind: str, name: str, portrait: np.ndarray, tmp_path: Path) -> None:
    # A hub option takes a local model folder; the shipped tiny.en stands in for one (never a download).
    extra = {"model_path": str(weights.locate_group("whisper-tiny.en").path)} if name == "whisper-hub" else {}
    if name == "hf-causal-lm":  # any local causal LM folder: the tiny one stands in
        from fusion.lm import tiny_language_model

        extra = {"model_path": str(tiny_language_model().save_pretrained(tmp_path / "lm"))}
    component = create(kind, name, **extra)  # type: ignore[arg-type]
    assert component.name == name or name == "whisper-hub"
    if kind == "face_detector":
        found = component.detect(portrait)
        assert len(found) >= 1 and found.boxes.shape[1] == 4
    elif kind == "face_landmarker":
        points, score = component(portrait, np.array([181.0, 58.0, 270.0, 178.0]), None)
        assert points is not None and points.shape == (468, 3) and score > 0.5
    elif kind == "face_expression":
        probs = component.predict_batch(np.stack([component.preprocess(portrait[58:178, 181:270])]))
        assert probs.shape == (1, 7) and np.isclose(probs.sum(), 1.0, atol=1e-5)
    elif kind == "text_emotion":
        (result,) = component.predict(["I am so happy today"])
        assert np.isclose(sum(result.emotion.probabilities.values()), 1.0, atol=1e-5)
        assert result.emotion.label == "happiness"
    elif kind == "language_model":
        assert component.generate("Say hello.", max_new_tokens=4).num_tokens >= 1
    else:
        run_voice_component(kind, component)


def test_untrained_expression_model_builds_offline() -> None:
    model = create("face_expression", "fer-mini-xception", pretrained=False)
    probs = model.predict_batch(np.zeros((2, 64, 64), np.float32))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1.0, atol=1e-5)

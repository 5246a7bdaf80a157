"""The emotion diffusion pipeline: tiny random UNets built here, the shipped pipeline, judging, the trainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from affectlens import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.registry import create
from affectlens.tree import AffectTree, TreeNode
from generation.create import GeneratedImage, ImageGenerator, tree_emotion
from generation.diffusion import (
    EmotionDiffusionPipeline,
    build_scheduler,
    emotion_weights,
    image_grid,
    judge,
    load_emotion_pipeline,
    mean_pairwise_distance,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_pipeline(seed: int = 0) -> EmotionDiffusionPipeline:
    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        num_class_embeds=len(CANONICAL_EMOTIONS) + 1,
        norm_num_groups=4,
        attention_head_dim=8,
    )
    pipe = EmotionDiffusionPipeline(unet=unet.eval(), scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe: EmotionDiffusionPipeline, emotion: object, seed: int, **kwargs: object) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    kwargs.setdefault("num_inference_steps", 4)
    return pipe(emotion, num_images=2, generator=g, output_type="np", **kwargs).images  # type: ignore[arg-type]


def test_samples_are_reproducible_and_depend_on_seed_and_emotion() -> None:
    pipe = tiny_pipeline()
    a, b = sample(pipe, "happiness", 0), sample(pipe, "happiness", 0)
    assert a.shape == (2, 8, 8) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample(pipe, "happiness", 1))
    assert not np.allclose(a, sample(pipe, "anger", 0))


def test_mixture_guidance_lies_between_its_emotions() -> None:
    """With no guidance the class does not matter; with guidance a 50/50 mixture is the mean direction."""
    pipe = tiny_pipeline()
    unguided = [sample(pipe, e, 3, guidance_scale=0.0) for e in ("sadness", "anger")]
    np.testing.assert_allclose(unguided[0], unguided[1], atol=1e-6)
    mixed = sample(pipe, {"sadness": 1.0, "anger": 1.0}, 3, guidance_scale=1.0, num_inference_steps=1)
    single = [sample(pipe, e, 3, guidance_scale=1.0, num_inference_steps=1) for e in ("sadness", "anger")]
    # one step, guidance 1: the prediction is linear in the conditional outputs, so the mixture's image is
    # the mean of the two single-emotion images wherever nothing was clipped to [0, 1]
    inside = (mixed > 0.01) & (mixed < 0.99)
    np.testing.assert_allclose(mixed[inside], ((single[0] + single[1]) / 2)[inside], atol=1e-4)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    pipe = tiny_pipeline()
    pipe.save_pretrained(str(tmp_path))
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "EmotionDiffusionPipeline" and index["emotions"] == list(CANONICAL_EMOTIONS)
    loaded = load_emotion_pipeline(tmp_path)
    np.testing.assert_array_equal(sample(pipe, "fear", 5), sample(loaded, "fear", 5))
    with pytest.raises(AffectLensError, match=r"model_index\.json"):
        load_emotion_pipeline(tmp_path / "unet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"emotion": "joyous-ish"}, "unknown emotion 'joyous-ish'"),
        ({"emotion": {}}, "no emotion"),
        ({"emotion": {"anger": -1.0}}, ">= 0"),
        ({"emotion": {"anger": float("nan")}}, "finite"),
        ({"num_images": 0}, "num_images"),
        ({"num_images": 10_000}, "num_images"),
        ({"num_inference_steps": 100_000}, "num_inference_steps"),
        ({"guidance_scale": 1e9}, "guidance_scale"),
        ({"display_size": 100_000}, "display_size"),
        ({"output_type": "latent"}, "output_type"),
    ],
)
def test_bad_requests_get_clear_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AffectLensError, match=message):
        tiny_pipeline()(**kwargs)  # type: ignore[arg-type]


def test_emotion_weights_accept_aliases_and_normalise() -> None:
    weights = emotion_weights({"happy": 3.0, "sad": 1.0}, CANONICAL_EMOTIONS)
    assert weights == {CANONICAL_EMOTIONS.index("happiness"): 0.75, CANONICAL_EMOTIONS.index("sadness"): 0.25}


def test_pil_output_is_upscaled_rgb() -> None:
    out = tiny_pipeline()("surprise", num_inference_steps=2, display_size=64)
    image = out.images[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    grid = image_grid([[image, image], [image]], labels=["a", "b"])
    assert grid.size[1] == 2 * 64 + 3 * 4 and grid.size[0] > 2 * 64


def test_judge_counts_every_sample_and_agrees_with_its_confusion() -> None:
    expression = create("face_expression", pretrained=False)
    result = judge(tiny_pipeline(), expression, per_emotion=3, batch=2, num_inference_steps=2)
    for emotion in CANONICAL_EMOTIONS:
        row = result.confusion[emotion]
        assert sum(row.values()) == 3
        assert result.agreement[emotion] == pytest.approx(row[emotion] / 3)
    assert result.mean_agreement == pytest.approx(np.mean(list(result.agreement.values())))
    assert result.seconds_per_image > 0


def test_judge_with_a_face_finder_counts_only_samples_with_a_face() -> None:
    """With a finder, a sample agrees only when a face is found in it too; the confusion stays the reader's."""
    expression = create("face_expression", pretrained=False)
    seen: list[np.ndarray] = []

    def every_other(grey: np.ndarray) -> bool:  # a face in the first, third, ... sample of each emotion
        seen.append(grey)
        return len(seen) % 4 in (1, 3)

    plain = judge(tiny_pipeline(), expression, per_emotion=4, batch=4, num_inference_steps=2)
    found = judge(tiny_pipeline(), expression, per_emotion=4, batch=4, num_inference_steps=2, finder=every_other)
    assert len(seen) == 4 * len(CANONICAL_EMOTIONS) and seen[0].shape == (8, 8)
    assert plain.face_found is None and found.face_found == dict.fromkeys(CANONICAL_EMOTIONS, 0.5)
    assert found.confusion == plain.confusion  # the same samples (same seeds), read alike
    for emotion in CANONICAL_EMOTIONS:
        assert found.agreement[emotion] <= min(plain.agreement[emotion], 0.5)
    nothing = judge(tiny_pipeline(), expression, per_emotion=2, num_inference_steps=2, finder=lambda grey: False)
    assert nothing.mean_agreement == 0.0


def test_mean_pairwise_distance() -> None:
    same = np.tile(np.array([[1.0, 0.0]]), (4, 1))
    assert mean_pairwise_distance(same) == pytest.approx(0.0)
    orthogonal = np.eye(2)
    assert mean_pairwise_distance(orthogonal) == pytest.approx(1.0)


def _tree(probabilities: dict[str, float]) -> AffectTree:
    nodes = {
        stage: TreeNode(stage, {}, 0.5) for stage in ("attributes", "expressions", "appraisal", "strategy", "reply")
    }
    label = max(probabilities, key=probabilities.__getitem__)
    emotion = TreeNode("emotion", {"label": label, "probabilities": probabilities}, probabilities[label])
    cause = TreeNode("cause", {"sentences": [{"text": "My exam went badly."}]}, 0.5)
    return AffectTree(emotion=emotion, cause=cause, **nodes)


def test_tree_emotion_mixes_only_a_strong_second() -> None:
    assert tree_emotion(_tree({"sadness": 0.9, "anger": 0.05, "neutral": 0.05})) == {"sadness": 1.0}
    mixed = tree_emotion(_tree({"sadness": 0.5, "anger": 0.4, "neutral": 0.1}))
    assert set(mixed) == {"sadness", "anger"} and mixed["sadness"] == pytest.approx(5 / 9)


def test_generator_over_a_pipeline_object_and_a_tree() -> None:
    generator = ImageGenerator(tiny_pipeline())
    out = generator.generate("anger", seed=4, steps=2, size=64)
    assert isinstance(out, GeneratedImage) and out.image.size == (64, 64)
    assert out.emotion == {"anger": 1.0} and out.seed == 4 and not out.notes
    again = generator.generate("anger", seed=4, steps=2, size=64)
    assert np.array_equal(np.asarray(out.image), np.asarray(again.image))
    from_tree = generator.from_tree(_tree({"sadness": 0.5, "anger": 0.4, "neutral": 0.1}), steps=2, size=64)
    assert set(from_tree.emotion) == {"sadness", "anger"}
    assert from_tree.notes and "faces only" in from_tree.notes[0]  # the cause cannot be drawn by the face model
    with pytest.raises(AffectLensError, match="seed"):
        generator.generate("anger", seed=-1)


@pytest.mark.weights
def test_shipped_pipeline_loads_verified_and_draws() -> None:
    pipe = load_emotion_pipeline()
    assert pipe.emotions == CANONICAL_EMOTIONS and pipe.unet.config.sample_size == 32
    size = sum(p.numel() for p in pipe.unet.parameters())
    assert size < 25e6 / 4  # float32 file under 25 MB
    grey = pipe("happiness", num_images=2, num_inference_steps=8, output_type="np",
                generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert grey.shape == (2, 32, 32) and grey.std() > 0.05  # a picture, not a flat field
    metrics = json.loads((REPO / "weights" / "emotion-diffusion" / "metrics.json").read_text())
    assert set(metrics["agreement"]) == set(CANONICAL_EMOTIONS)


@pytest.mark.data
@pytest.mark.slow
def test_training_script_runs_resumes_and_saves(tmp_path: Path, fer2013_npz: Path) -> None:
    def run(steps: int) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, str(REPO / "scripts" / "train_emotion_diffusion.py"), "--steps", str(steps),
               "--batch-size", "8", "--npz", str(fer2013_npz), "--checkpoint-every", "2", "--judge-per-emotion", "2", "--inference-steps", "2",
               "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--threads", "1"]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)

    run(2)
    resumed = run(4)
    assert "resumed at step 2" in resumed.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 4 and metrics["samples_per_emotion"] == 2
    assert load_emotion_pipeline(tmp_path / "out").emotions == CANONICAL_EMOTIONS

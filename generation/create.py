"""The public face of image generation: one ``ImageGenerator`` over the offline face diffusion model and any
diffusers text-to-image folder, and ``edit_expression`` for portraits.

``ImageGenerator()`` draws with the shipped ``EmotionDiffusionPipeline`` (faces, offline). ``ImageGenerator(path)``
opens a folder: a saved ``EmotionDiffusionPipeline`` is used as such; any other diffusers text-to-image pipeline
(e.g. SD-Turbo the user keeps locally) goes through the MC-Agent-style prompt rewriter
(``generation.prompting``), so the subject is drawn literally and the emotion as visual concepts.
``from_tree`` renders what an ``AffectTree`` understood: its emotion distribution (the top two, when the second
is strong enough to matter) and, for text-to-image models, its cause.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from affectlens.errors import AffectLensError

if TYPE_CHECKING:
    from affectlens.tree import AffectTree
    from generation.text_to_image import EmotionScorer

logger = logging.getLogger(__name__)

#: A second emotion joins the first in ``from_tree`` when it holds at least this share of the top two.
MIX_THRESHOLD = 0.3


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image, what was asked and how it was made."""

    image: Image.Image
    emotion: dict[str, float]
    seed: int
    backend: str
    seconds: float
    subject: str | None = None
    prompt: dict[str, Any] | None = None  # the rewritten prompt (text-to-image backends)
    notes: tuple[str, ...] = ()
    scores: dict[str, float] | None = None  # CLIP's reading of the image against the emotions, when given CLIP

    def to_dict(self) -> dict[str, Any]:
        return {
            "emotion": self.emotion,
            "seed": self.seed,
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "subject": self.subject,
            "prompt": self.prompt,
            "notes": list(self.notes),
            "scores": self.scores,
            "size": list(self.image.size),
        }


def tree_emotion(tree: AffectTree) -> dict[str, float]:
    """The emotion mixture a tree asks to render: its top emotion, plus the second when it is strong enough."""
    value = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
    probabilities = {k: float(v) for k, v in (value.get("probabilities") or {}).items()}
    if not probabilities:
        label = value.get("label")
        if not label:
            raise AffectLensError("the tree names no emotion to render")
        return {str(label): 1.0}
    return top_mixture(probabilities)


def top_mixture(probabilities: Mapping[str, float]) -> dict[str, float]:
    """The top emotion of a distribution, plus the second when it holds at least ``MIX_THRESHOLD`` of the top two;
    weights renormalised over what is kept."""
    (first, p1), *rest = sorted(probabilities.items(), key=lambda kv: -kv[1])
    if rest and rest[0][1] / (p1 + rest[0][1]) >= MIX_THRESHOLD:
        second, p2 = rest[0]
        return {first: p1 / (p1 + p2), second: p2 / (p1 + p2)}
    return {first: 1.0}


def _is_emotion_pipeline(folder: Path) -> bool:
    try:
        return json.loads((folder / "model_index.json").read_text()).get("_class_name") == "EmotionDiffusionPipeline"
    except (OSError, ValueError):
        return False


class ImageGenerator:
    """Emotion-directed images. ``model``: ``None`` (the shipped offline face model), a folder, or a diffusers
    pipeline object already built. ``clip`` (text-to-image models only): a local transformers CLIP folder, or a
    ready ``EmotionScorer`` (e.g. ``OpenClipEmotionScorer.from_checkpoint(...)``), to score each image."""

    def __init__(self, model: str | Path | Any | None = None, clip: str | Path | EmotionScorer | None = None) -> None:
        from generation.diffusion import EmotionDiffusionPipeline, load_emotion_pipeline

        if clip is not None and (model is None or isinstance(model, EmotionDiffusionPipeline)):
            raise AffectLensError("CLIP scoring (clip=) is for text-to-image models; the face model is judged by "
                                  "our expression model (generation.diffusion.judge)")  # fmt: skip

        self.backend: Any
        if model is None:
            self.pipe: Any = load_emotion_pipeline()
            self.kind, self.name = "emotion-diffusion", "emotion-diffusion (shipped)"
        elif isinstance(model, EmotionDiffusionPipeline):
            self.pipe, self.kind, self.name = model, "emotion-diffusion", type(model).__name__
        elif isinstance(model, str | Path) and _is_emotion_pipeline(Path(model)):
            self.pipe, self.kind, self.name = load_emotion_pipeline(model), "emotion-diffusion", str(model)
        else:
            from generation.text_to_image import EmotionScorer, TextToImageBackend

            scorer = EmotionScorer.from_pretrained(clip) if isinstance(clip, str | Path) else clip
            self.pipe = TextToImageBackend(model, scorer=scorer)
            self.kind = "text-to-image"
            self.name = str(model) if isinstance(model, str | Path) else type(model).__name__

    def generate(
        self,
        emotion: str | Mapping[str, float],
        subject: str | None = None,
        cause: str | None = None,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        size: int = 256,
    ) -> GeneratedImage:
        """One image for ``emotion`` (a name or a {name: weight} mixture); ``seed`` makes it reproducible."""
        from generation.diffusion import emotion_weights

        if not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise AffectLensError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(size, int) or not 64 <= size <= 2048:
            raise AffectLensError(f"size must be 64..2048 pixels, got {size!r}")
        if self.kind == "text-to-image":
            out = self.pipe.generate(
                emotion if isinstance(emotion, str) else dict(emotion),
                subject=subject,
                cause=cause,
                seed=seed,
                steps=steps,
                guidance=guidance,
                width=size,
                height=size,
            )
            asked = emotion_weights(emotion, _emotions())
            return GeneratedImage(
                image=out.image,
                emotion={_emotions()[k]: round(v, 4) for k, v in asked.items()},
                seed=seed,
                backend=self.name,
                seconds=out.seconds,
                subject=subject,
                prompt=out.prompt.to_dict(),
                notes=tuple(out.prompt.notes),
                scores=out.scores,
            )
        notes: list[str] = []
        if subject or cause:
            notes.append(
                "the offline model draws faces only: the subject and cause need a text-to-image model "
                "(ImageGenerator(<diffusers folder>) / --model)"
            )
            logger.info(notes[-1])
        weights = emotion_weights(emotion, self.pipe.emotions)
        start = time.perf_counter()
        out = self.pipe(
            {self.pipe.emotions[k]: v for k, v in weights.items()},
            num_images=1,
            num_inference_steps=25 if steps is None else steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(seed),
            display_size=size,
        )
        return GeneratedImage(
            image=out.images[0],
            emotion={self.pipe.emotions[k]: round(v, 4) for k, v in weights.items()},
            seed=seed,
            backend=self.name,
            seconds=time.perf_counter() - start,
            notes=tuple(notes),
        )

    def from_tree(self, tree: AffectTree, subject: str | None = None, seed: int = 0, **kwargs: Any) -> GeneratedImage:
        """Render what ``tree`` understood: its emotion mixture, and its cause for text-to-image models."""
        cause = " ".join(tree.cause_sentences())[:200] or None
        return self.generate(tree_emotion(tree), subject=subject, cause=cause, seed=seed, **kwargs)


def _emotions() -> tuple[str, ...]:
    from affectlens.labels import CANONICAL_EMOTIONS

    return CANONICAL_EMOTIONS


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A PIL image or an HxW / HxWx3 / HxWx4 uint8 array -> HxWx3 uint8 RGB."""
    array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if array.dtype != np.uint8:
        raise AffectLensError(f"image must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise AffectLensError(f"image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    return np.ascontiguousarray(array[..., :3])

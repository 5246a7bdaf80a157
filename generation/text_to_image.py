"""Emotion-directed text-to-image with any diffusers pipeline from a local folder, and a CLIP emotion scorer.

``TextToImageBackend`` wires a text-to-image pipeline (Stable Diffusion 1.x/2.x, SD-Turbo, SDXL, ... anything
``diffusers.AutoPipelineForText2Image`` or ``DiffusionPipeline`` loads and that takes a ``prompt``) to the rule-based
prompt rewriter (``generation.prompting.rewrite_prompt``): ``generate("sadness", "a harbour", seed=3)`` rewrites the
emotion into visual concepts and a negative prompt, runs the pipeline with a seeded CPU ``torch.Generator`` (same
seed, same image on the same machine and library versions) and returns a ``TextToImageResult`` (the PIL image, the
``EmotionPrompt`` that explains it, the settings and the seconds it took).

Where the pipeline comes from (the house lookup rule, as in ``fusion.lm``):

- a pipeline object, used as is (tests inject tiny ones; nothing is moved or reconfigured);
- a local folder holding ``model_index.json`` (``save_pretrained`` output), read with ``local_files_only=True``;
- a hub id (``owner/name``), read from the local Hugging Face cache only, unless the user sets
  ``AFFECTLENS_ALLOW_HUB=1`` (``affectlens.weights.hub_allowed``); nothing downloads at import or by default.

Defaults: a pipeline whose name (folder, hub id or ``_name_or_path``) says ``turbo`` (SD-Turbo, SDXL-Turbo: one to
four steps, trained without classifier-free guidance) gets ``TURBO_DEFAULTS`` (1 step, guidance 0, so the negative
prompt has no effect); any other gets ``STANDARD_DEFAULTS`` (30 steps, guidance 7.5). The default size is the
pipeline's native one (UNet sample size times the VAE scale factor). Inputs are checked before anything runs
(``AffectLensError``): sizes multiples of 8 in [64, 2048], steps in [1, 150], guidance in [0, 30].

``EmotionScorer`` reads how an image feels with a CLIP model from a local folder (transformers ``CLIPModel`` and
``CLIPProcessor``): zero-shot, against ``EMOTION_TEXTS`` (three phrasings per emotion, averaged), returning
``{emotion: probability}``. ``OpenClipEmotionScorer.from_checkpoint("ViT-B-32", "b32.safetensors")`` does the same
with an open_clip model (``pip install open_clip_torch``) from a local checkpoint file; a pretrained tag such as
``"openai"`` (a download) needs ``AFFECTLENS_ALLOW_HUB=1``. Both share the scoring; the backend scores its images
only when given a scorer.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from PIL import Image

from affectlens import weights
from affectlens.errors import AffectLensError, WeightsError
from affectlens.labels import CANONICAL_EMOTIONS
from generation.prompting import DEFAULT_STYLE, EmotionPrompt, rewrite_prompt

logger = logging.getLogger(__name__)

__all__ = [
    "EMOTION_TEXTS",
    "MAX_GUIDANCE",
    "MAX_SIZE",
    "MAX_STEPS",
    "MIN_SIZE",
    "STANDARD_DEFAULTS",
    "TURBO_DEFAULTS",
    "EmotionScorer",
    "GenerationDefaults",
    "OpenClipEmotionScorer",
    "TextToImageBackend",
    "TextToImageResult",
    "load_text_to_image_pipeline",
]

MIN_SIZE: Final = 64
MAX_SIZE: Final = 2048
SIZE_MULTIPLE: Final = 8
MAX_STEPS: Final = 150
MAX_GUIDANCE: Final = 30.0
#: Used when a pipeline tells nothing about its native resolution.
FALLBACK_SIZE: Final = 512
_HUB_ID: Final = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Suffixes of the checkpoint files ``OpenClipEmotionScorer.from_checkpoint`` reads (open_clip loads them itself;
#: prefer ``.safetensors``: the others are pickles).
OPEN_CLIP_SUFFIXES: Final = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class GenerationDefaults:
    """Sampling defaults of a kind of pipeline: ``steps`` and classifier-free ``guidance`` scale."""

    steps: int
    guidance: float


#: SD-Turbo and SDXL-Turbo (adversarial diffusion distillation): 1-4 steps and no classifier-free guidance.
TURBO_DEFAULTS: Final = GenerationDefaults(steps=1, guidance=0.0)
#: Classic latent diffusion (SD 1.x/2.x, SDXL base) with a DDIM/PNDM/Euler-like scheduler.
STANDARD_DEFAULTS: Final = GenerationDefaults(steps=30, guidance=7.5)

#: Zero-shot texts per emotion for ``EmotionScorer``: their normalised CLIP embeddings are averaged.
EMOTION_TEXTS: Final[dict[str, tuple[str, ...]]] = {
    "neutral": ("a photo that feels neutral", "a calm, ordinary picture", "an image with no strong emotion"),
    "happiness": ("a photo that feels happy", "a joyful picture", "an image full of happiness"),
    "sadness": ("a photo that feels sad", "a melancholic picture", "an image full of sadness"),
    "surprise": ("a photo that feels surprising", "an astonishing picture", "an image full of surprise"),
    "fear": ("a photo that feels frightening", "a scary picture", "an image full of fear"),
    "disgust": ("a photo that feels disgusting", "a repulsive picture", "an image full of disgust"),
    "anger": ("a photo that feels angry", "a furious picture", "an image full of anger"),
}


@dataclass(frozen=True)
class TextToImageResult:
    """One generated image and how it was made. ``negative_used``: the pipeline took the negative prompt and
    guidance was above 1 (classifier-free guidance on). ``scores``: ``EmotionScorer`` probabilities, when the
    backend has a scorer. ``seconds``: wall-clock time of the pipeline call."""

    image: Image.Image
    prompt: EmotionPrompt
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    seconds: float
    negative_used: bool
    scores: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-ready."""
        return {
            "prompt": self.prompt.to_dict(),
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "seconds": round(self.seconds, 4),
            "negative_used": self.negative_used,
            "scores": dict(self.scores) if self.scores is not None else None,
        }


# ---- loading --------------------------------------------------------------------------------------------------


def _resolve_source(source: str | os.PathLike[str], marker: str, what: str) -> tuple[str, bool]:
    """Where ``from_pretrained`` should read ``source`` from, and whether it must stay local.

    Raises:
        WeightsError: a folder that does not exist or lacks ``marker``, a file, or a name that is neither a
            folder nor a hub id.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / marker).is_file():
            raise WeightsError(f"{path}: no {marker} in this folder; it is not a {what} (save_pretrained output)")
        return str(path), True
    if path.exists():
        raise WeightsError(f"{path}: is a file; a {what} is a folder holding {marker}")
    text = str(source)
    if _HUB_ID.match(text) and not text.startswith((".", "~")):
        return text, not weights.hub_allowed()
    raise WeightsError(f"{path}: no such folder; a {what} is a local folder holding {marker}")


def _load_error(where: str, local_only: bool, what: str, exc: Exception) -> WeightsError:
    if Path(where).is_dir():
        return WeightsError(f"{where}: the files of this {what} do not load ({exc})")
    hint = "; set AFFECTLENS_ALLOW_HUB=1 to let it download from the hub" if local_only else ""
    return WeightsError(f"{where}: no such folder, and no {what} of that hub id in the local cache ({exc}){hint}")


def _dtype_kwargs(dtype: torch.dtype | None) -> dict[str, torch.dtype]:
    """The ``from_pretrained`` keyword for ``dtype``: ``dtype`` where diffusers has it (it deprecated
    ``torch_dtype`` in its 0.4x releases), ``torch_dtype`` before."""
    if dtype is None:
        return {}
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype": dtype}


def load_text_to_image_pipeline(
    source: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Any:
    """A diffusers text-to-image pipeline from a local folder (or a hub id, module docstring), on ``device``
    (default: CUDA when available, else CPU) in ``dtype`` (default: float16 on CUDA, as saved on CPU).

    Raises:
        WeightsError: no such folder, no ``model_index.json``, or the files do not load.
        AffectLensError: the pipeline does not take a text ``prompt``.
    """
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    where, local_only = _resolve_source(source, "model_index.json", "diffusers pipeline")
    on = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if on.type == "cuda" else None)  # None: as saved (float32 for most folders)
    kwargs: dict[str, Any] = {"local_files_only": local_only, **_dtype_kwargs(dtype)}
    started = time.perf_counter()
    try:
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(where, **kwargs)
        except ValueError as exc:  # a pipeline class AutoPipeline does not map (custom or community pipelines)
            logger.debug("AutoPipelineForText2Image cannot load %s (%s); trying DiffusionPipeline", where, exc)
            pipe = DiffusionPipeline.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(where, local_only, "diffusers pipeline", exc) from exc
    if "prompt" not in inspect.signature(pipe.__call__).parameters:
        raise AffectLensError(
            f"{where}: {type(pipe).__name__} takes no text prompt; it is not a text-to-image pipeline"
        )
    pipe = pipe.to(on)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    logger.info("loaded %s from %s on %s in %.1f s", type(pipe).__name__, where, on, time.perf_counter() - started)
    return pipe


def _pipeline_name(pipe: Any, source: str | None) -> str:
    """The last path component of the source, the config's ``_name_or_path`` and ``name_or_path`` ("sd-turbo" of
    "/models/sd-turbo" or "stabilityai/sd-turbo"), de-duplicated; "" when none is known."""
    config = getattr(pipe, "config", None)
    named = config.get("_name_or_path") if isinstance(config, Mapping) else getattr(config, "_name_or_path", None)
    parts = (source, named, getattr(pipe, "name_or_path", None))
    return " ".join(dict.fromkeys(Path(str(part)).name for part in parts if part))


def _native_size(pipe: Any) -> int:
    """The pipeline's default image side: its default sample size (or UNet/transformer sample size) times the VAE
    scale factor, rounded to a multiple of 8 and kept in [64, 2048]; ``FALLBACK_SIZE`` when it says nothing."""
    factor = getattr(pipe, "vae_scale_factor", None)
    sample = getattr(pipe, "default_sample_size", None)
    for part in ("unet", "transformer"):
        if sample is None and getattr(pipe, part, None) is not None:
            sample = getattr(getattr(pipe, part).config, "sample_size", None)
    if not isinstance(sample, int) or not isinstance(factor, int):
        return FALLBACK_SIZE
    side = sample * factor
    return min(MAX_SIZE, max(MIN_SIZE, side - side % SIZE_MULTIPLE))


def _check_size(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise AffectLensError(f"{name} must be an int number of pixels, got {value!r}")
    if not MIN_SIZE <= value <= MAX_SIZE or value % SIZE_MULTIPLE:
        raise AffectLensError(f"{name} must be a multiple of {SIZE_MULTIPLE} in [{MIN_SIZE}, {MAX_SIZE}], got {value}")
    return value


def _check_settings(seed: int, steps: int, guidance: float) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise AffectLensError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise AffectLensError(f"steps must be an int in [1, {MAX_STEPS}], got {steps!r}")
    if isinstance(guidance, bool) or not isinstance(guidance, int | float) or not 0.0 <= guidance <= MAX_GUIDANCE:
        raise AffectLensError(f"guidance must be a number in [0, {MAX_GUIDANCE:g}], got {guidance!r}")


def _as_pil(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


# ---- the backend ----------------------------------------------------------------------------------------------


class TextToImageBackend:
    """Emotion-directed text-to-image over any diffusers text-to-image pipeline (module docstring).

    ``pipeline``: a local folder, a hub id (local cache unless ``AFFECTLENS_ALLOW_HUB=1``) or a ready pipeline
    object. ``rewriter``: turns ``(emotion, subject, cause=..., intensity=..., seed=..., style=...)`` into an
    ``EmotionPrompt`` (default ``rewrite_prompt``). ``defaults``: overrides the turbo/standard choice. ``scorer``:
    scores every image when given.
    """

    def __init__(
        self,
        pipeline: str | os.PathLike[str] | Any,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        rewriter: Callable[..., EmotionPrompt] = rewrite_prompt,
        defaults: GenerationDefaults | None = None,
        scorer: EmotionScorer | None = None,
    ) -> None:
        if isinstance(pipeline, str | os.PathLike):
            self.source: str | None = str(pipeline)
            self.pipeline = load_text_to_image_pipeline(pipeline, device=device, dtype=dtype)
        else:
            if not callable(pipeline):
                raise AffectLensError(f"pipeline must be a folder, a hub id or a pipeline object, got {pipeline!r}")
            self.source = None
            self.pipeline = pipeline
        self.name = _pipeline_name(self.pipeline, self.source) or type(self.pipeline).__name__
        self.is_turbo = "turbo" in self.name.lower()
        self.defaults = defaults or (TURBO_DEFAULTS if self.is_turbo else STANDARD_DEFAULTS)
        self.native_size = _native_size(self.pipeline)
        self.rewriter = rewriter
        self.scorer = scorer
        signature = inspect.signature(self.pipeline.__call__)
        self._params = set(signature.parameters)
        self._takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())

    def __repr__(self) -> str:
        return f"TextToImageBackend({self.name!r}, defaults={self.defaults})"

    def _accepts(self, name: str) -> bool:
        return self._takes_any or name in self._params

    def generate(
        self,
        emotion: str | Mapping[str, float],
        subject: str | None = None,
        *,
        cause: str | None = None,
        intensity: float | None = None,
        seed: int = 0,
        steps: int | None = None,
        guidance: float | None = None,
        width: int | None = None,
        height: int | None = None,
        style: str | None = DEFAULT_STYLE,
    ) -> TextToImageResult:
        """Rewrite the emotion (a name or ``{emotion: weight}``), ``subject`` and ``cause`` into a prompt and draw
        it. ``steps``/``guidance`` default to ``self.defaults``, ``width``/``height`` to the native size.

        Raises:
            AffectLensError: an unknown emotion or a setting out of range (checked before the pipeline runs).
        """
        steps = self.defaults.steps if steps is None else steps
        guidance = self.defaults.guidance if guidance is None else guidance
        _check_settings(seed, steps, guidance)
        width = _check_size("width", self.native_size if width is None else width)
        height = _check_size("height", self.native_size if height is None else height)
        prompt = self.rewriter(emotion, subject, cause=cause, intensity=intensity, seed=seed, style=style)
        return self.render(prompt, seed=seed, steps=steps, guidance=float(guidance), width=width, height=height)

    def render(
        self, prompt: EmotionPrompt, *, seed: int, steps: int, guidance: float, width: int, height: int
    ) -> TextToImageResult:
        """Run the pipeline on a ready ``EmotionPrompt`` (the lower layer of ``generate``; settings checked)."""
        _check_settings(seed, steps, guidance)
        _check_size("width", width)
        _check_size("height", height)
        kwargs: dict[str, Any] = {
            "prompt": prompt.prompt,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "width": width,
            "height": height,
            "generator": torch.Generator(device="cpu").manual_seed(seed),
            "output_type": "pil",
        }
        negative_used = self._accepts("negative_prompt")
        if negative_used:
            kwargs["negative_prompt"] = prompt.negative_prompt
        kwargs = {k: v for k, v in kwargs.items() if k == "prompt" or self._accepts(k)}
        started = time.perf_counter()
        output = self.pipeline(**kwargs)
        seconds = time.perf_counter() - started
        images = output.images if hasattr(output, "images") else output[0]
        image = _as_pil(images[0])
        scores = self.scorer.score(image) if self.scorer is not None else None
        logger.info("%s: %s, seed %d, %d steps, %dx%d in %.2f s", self.name, prompt.emotions, seed, steps, width,
                    height, seconds)  # fmt: skip
        return TextToImageResult(
            image=image,
            prompt=prompt,
            seed=seed,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            seconds=seconds,
            negative_used=negative_used and guidance > 1.0,
            scores=scores,
        )


# ---- the scorer -----------------------------------------------------------------------------------------------


def _features(output: Any) -> torch.Tensor:
    """Projected CLIP features: a tensor (transformers 4.x) or the ``pooler_output`` of a model output (5.x)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class EmotionScorer:
    """Zero-shot emotion of an image with CLIP: softmax over the 7 emotions of CLIP's scaled cosine similarity
    between the image and each emotion's averaged text embedding (``EMOTION_TEXTS``)."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        texts: Mapping[str, Sequence[str]] = EMOTION_TEXTS,
        device: str | torch.device | None = None,
    ) -> None:
        unknown = sorted(set(texts) - set(CANONICAL_EMOTIONS))
        if unknown or any(not texts[e] for e in texts):
            raise AffectLensError(f"texts must map canonical emotions to phrases; unknown or empty: {unknown}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.emotions = tuple(e for e in CANONICAL_EMOTIONS if e in texts)
        self._texts = {e: tuple(texts[e]) for e in self.emotions}
        self._text_embeds: torch.Tensor | None = None

    @classmethod
    def from_pretrained(
        cls, source: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> EmotionScorer:
        """A scorer from a local CLIP folder (``config.json`` + weights + processor files), or a hub id read from
        the local cache unless ``AFFECTLENS_ALLOW_HUB=1``.

        Raises:
            WeightsError: no such folder, no ``config.json``, or the files do not load.
        """
        from transformers import CLIPModel, CLIPProcessor

        where, local_only = _resolve_source(source, "config.json", "CLIP model")
        try:
            model = CLIPModel.from_pretrained(where, local_files_only=local_only)
            processor = CLIPProcessor.from_pretrained(where, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise _load_error(where, local_only, "CLIP model", exc) from exc
        on = torch.device(device) if device is not None else torch.device("cpu")
        return cls(model, processor, device=on)

    def _encode_texts(self, phrases: list[str]) -> torch.Tensor:
        """``(N, D)`` projected text features (not normalised); the backend-specific half of the scoring."""
        inputs = self.processor(text=phrases, return_tensors="pt", padding=True, truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return _features(self.model.get_text_features(**inputs))

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """``(N, D)`` projected image features (not normalised) of RGB PIL images."""
        inputs = self.processor(images=images, return_tensors="pt")
        return _features(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device)))

    def _emotion_embeds(self) -> torch.Tensor:
        """``(7, D)`` unit-norm text embeddings, one per emotion (its phrasings averaged), computed once."""
        if self._text_embeds is None:
            phrases = [p for e in self.emotions for p in self._texts[e]]
            with torch.inference_mode():
                feats = self._encode_texts(phrases).float()
            feats = torch.nn.functional.normalize(feats, dim=-1)
            rows, start = [], 0
            for e in self.emotions:
                n = len(self._texts[e])
                rows.append(feats[start : start + n].mean(dim=0))
                start += n
            self._text_embeds = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
        return self._text_embeds

    def score_batch(self, images: Sequence[Image.Image | np.ndarray]) -> list[dict[str, float]]:
        """``{emotion: probability}`` for each image (PIL or ``HxWx3`` uint8 RGB array); each sums to 1."""
        if not images:
            return []
        pils = [_as_pil(image) for image in images]
        with torch.inference_mode():
            feats = torch.nn.functional.normalize(self._encode_images(pils).float(), dim=-1)
            scale = self.model.logit_scale.exp().float()
            probs = (scale * feats @ self._emotion_embeds().T).softmax(dim=-1).cpu()
        return [{e: float(p) for e, p in zip(self.emotions, row.tolist(), strict=True)} for row in probs]

    def score(self, image: Image.Image | np.ndarray) -> dict[str, float]:
        """``{emotion: probability}`` for one image."""
        return self.score_batch([image])[0]


def _import_open_clip() -> Any:
    """The ``open_clip`` module, an optional dependency.

    Raises:
        AffectLensError: it is not installed, or does not import (e.g. a torchvision built for another torch).
    """
    try:
        import open_clip
    except ImportError as exc:
        raise AffectLensError(f"open_clip scoring needs `pip install open_clip_torch` ({exc})") from exc
    except (OSError, RuntimeError) as exc:  # torchvision whose compiled ops do not match the installed torch
        raise AffectLensError(
            f"open_clip does not import ({exc}); install open_clip_torch with a torchvision built for this torch"
        ) from exc
    return open_clip


def _open_clip_checkpoint(model_name: str, pretrained: str | os.PathLike[str]) -> str:
    """What to pass open_clip as ``pretrained``: a local checkpoint file, or (only with ``AFFECTLENS_ALLOW_HUB=1``)
    a pretrained tag it downloads.

    Raises:
        WeightsError: no such file, a folder, or a tag / ``hf-hub:`` name without the hub opt-in.
    """
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path)
    text = str(pretrained)
    looks_local = path.suffix in OPEN_CLIP_SUFFIXES or os.sep in text or text.startswith((".", "~"))
    if path.exists() or looks_local:
        raise WeightsError(f"{path}: no such checkpoint file; pass a local {'/'.join(OPEN_CLIP_SUFFIXES)} file")
    if not weights.hub_allowed():
        raise WeightsError(f"{model_name}={text}: not a local checkpoint file; open_clip would download this tag: "
                           "pass a local .safetensors file or set AFFECTLENS_ALLOW_HUB=1")  # fmt: skip
    return text


class OpenClipEmotionScorer(EmotionScorer):
    """``EmotionScorer`` over an open_clip model: the same prompts and scoring, open_clip's encoders.
    ``preprocess``: PIL image -> ``3xHxW`` float tensor (open_clip's eval transform); ``tokenizer``: list of str ->
    ``NxL`` token ids."""

    def __init__(
        self,
        model: Any,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        *,
        texts: Mapping[str, Sequence[str]] = EMOTION_TEXTS,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(model, preprocess, texts=texts, device=device)
        self.tokenizer = tokenizer

    @classmethod
    def from_checkpoint(
        cls, model_name: str, pretrained: str | os.PathLike[str], *, device: str | torch.device | None = None
    ) -> OpenClipEmotionScorer:
        """A scorer from an open_clip architecture name (``"ViT-B-32"``, or one added with
        ``open_clip.add_model_config``) and a local checkpoint file (``.safetensors`` preferred; open_clip reads
        ``.pt``/``.pth``/``.bin`` pickles itself). A pretrained tag (``"openai"``) or an ``hf-hub:`` name downloads,
        so it needs ``AFFECTLENS_ALLOW_HUB=1``.

        Raises:
            WeightsError: no such checkpoint file, a download without the opt-in, or the checkpoint does not load.
            AffectLensError: open_clip is not installed.
        """
        if model_name.startswith("hf-hub:") and not weights.hub_allowed():
            raise WeightsError(f"{model_name}: an hf-hub: model downloads; set AFFECTLENS_ALLOW_HUB=1 to allow it")
        checkpoint = _open_clip_checkpoint(model_name, pretrained)
        open_clip = _import_open_clip()
        on = torch.device(device) if device is not None else torch.device("cpu")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=checkpoint, device=on)
            tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise WeightsError(f"{model_name}={checkpoint}: the open_clip model does not load ({exc})") from exc
        return cls(model, preprocess, tokenizer, device=on)

    def _encode_texts(self, phrases: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(phrases).to(self.device))

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = torch.stack([self.processor(image) for image in images]).to(self.device)
        return self.model.encode_image(pixels)

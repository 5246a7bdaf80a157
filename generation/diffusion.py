"""Emotion-conditioned diffusion that runs offline: a small class-conditional ``UNet2DModel`` trained on FER2013 faces.

``EmotionDiffusionPipeline`` is a diffusers ``DiffusionPipeline`` (``save_pretrained``/``from_pretrained``): a UNet
with one class embedding per canonical emotion plus a *null* class (dropped in training for classifier-free
guidance) and a multistep DPM-Solver scheduler. It draws 32x32 grey faces and upscales them for display. An
emotion can be one name or a distribution (the tree's top emotions): guidance then sums the weighted conditional
directions (composable classifier-free guidance), so "mostly sad, a little angry" is drawn as a mixture.

The shipped pipeline is trained by ``scripts/train_emotion_diffusion.py``; ``judge`` measures it with our own
expression model (agreement with the requested emotion) and face embeddings (diversity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from diffusers.models.unets.unet_2d import UNet2DModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from PIL import Image

from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, canonical_mixture

logger = logging.getLogger(__name__)

SAMPLE_SIZE = 32
MAX_STEPS = 200
MAX_IMAGES = 64
MAX_DISPLAY = 2048


def build_unet(sample_size: int = SAMPLE_SIZE, num_emotions: int = len(CANONICAL_EMOTIONS)) -> UNet2DModel:
    """The shipped architecture: 3 resolutions (32, 64, 96 channels), self-attention at 8x8, 1.8 M parameters."""
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 96),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        num_class_embeds=num_emotions + 1,  # the last one is the null class of classifier-free guidance
        norm_num_groups=16,
        attention_head_dim=32,
    )


def build_scheduler(prediction_type: str = "v_prediction") -> DPMSolverMultistepScheduler:
    """The sampling scheduler; training uses a ``DDPMScheduler`` from the same config (cosine betas, 1000 steps)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        algorithm_type="dpmsolver++",
        solver_order=2,
    )


def emotion_weights(emotion: str | Mapping[str, float], emotions: Sequence[str]) -> dict[int, float]:
    """One name or a {name: weight} distribution -> {class index in ``emotions``: weight} (``canonical_mixture``:
    weights sum to 1; unknown names, and emotions the model was not trained on, raise)."""
    weights: dict[int, float] = {}
    for label, weight in canonical_mixture(emotion).items():
        if label not in emotions:
            raise AffectLensError(f"the model has no emotion {label!r}: use one of {', '.join(emotions)}")
        weights[emotions.index(label)] = weight
    return weights


class EmotionDiffusionPipeline(DiffusionPipeline):
    """Class-conditional face diffusion with classifier-free guidance over canonical emotions.

    ``default_guidance`` (saved in ``model_index.json``) is the guidance scale used when a call names none.

    ``pipe("happiness", num_images=4, generator=torch.Generator().manual_seed(0))`` -> ``ImagePipelineOutput``
    whose ``images`` are PIL RGB images ``display_size`` pixels square (``output_type="np"``: Nx S x S float grey
    in [0, 1] at the model's own resolution, for judging).
    """

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DPMSolverMultistepScheduler,
        emotions: Sequence[str] = CANONICAL_EMOTIONS,
        default_guidance: float = 3.0,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(emotions=list(emotions), default_guidance=float(default_guidance))
        if int(unet.config["num_class_embeds"]) != len(emotions) + 1:
            raise ValueError(f"the UNet has {unet.config['num_class_embeds']} classes; expected {len(emotions)} + null")

    @property
    def emotions(self) -> tuple[str, ...]:
        return tuple(self.config["emotions"])

    @torch.no_grad()
    def __call__(
        self,
        emotion: str | Mapping[str, float] = "happiness",
        num_images: int = 1,
        num_inference_steps: int = 25,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        display_size: int = 256,
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        weights = emotion_weights(emotion, self.emotions)
        if guidance_scale is None:  # the scale chosen when the model was judged (scripts/judge_emotion_diffusion.py)
            guidance_scale = float(self.config.get("default_guidance", 3.0))
        if not 1 <= num_images <= MAX_IMAGES:
            raise AffectLensError(f"num_images must be 1..{MAX_IMAGES}, got {num_images}")
        if not 1 <= num_inference_steps <= MAX_STEPS:
            raise AffectLensError(f"num_inference_steps must be 1..{MAX_STEPS}, got {num_inference_steps}")
        if not 0.0 <= guidance_scale <= 20.0:
            raise AffectLensError(f"guidance_scale must be in [0, 20], got {guidance_scale}")
        if not 16 <= display_size <= MAX_DISPLAY:
            raise AffectLensError(f"display_size must be 16..{MAX_DISPLAY} pixels, got {display_size}")
        if output_type not in ("pil", "np"):
            raise AffectLensError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        size = int(self.unet.config["sample_size"])
        device, dtype = self.unet.device, self.unet.dtype
        null = len(self.emotions)
        classes = [*weights, null]  # one UNet pass per weighted emotion, and the null class
        x = torch.randn((num_images, 1, size, size), generator=generator, dtype=torch.float32).to(device)
        labels = torch.tensor(classes, device=device).repeat_interleave(num_images)
        coefficients = torch.tensor(list(weights.values()), dtype=torch.float32, device=device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = x * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            inputs = self.scheduler.scale_model_input(x, t).repeat(len(classes), 1, 1, 1)
            out = self.unet(inputs.to(dtype), t, class_labels=labels).sample.float()
            out = out.view(len(classes), num_images, *out.shape[1:])
            unconditional = out[-1]
            direction = (coefficients.view(-1, 1, 1, 1, 1) * (out[:-1] - unconditional)).sum(0)
            x = self.scheduler.step(unconditional + guidance_scale * direction, t, x).prev_sample
        grey = ((x.clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy()
        images: Any = grey if output_type == "np" else [display_image(g, display_size) for g in grey]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def display_image(grey: np.ndarray, size: int) -> Image.Image:
    """SxS grey in [0, 1] -> ``size`` x ``size`` RGB PIL image (Lanczos upscale, mild unsharp mask)."""
    u8 = np.clip(grey * 255.0 + 0.5, 0, 255).astype(np.uint8)
    big = cv2.resize(u8, (size, size), interpolation=cv2.INTER_LANCZOS4)
    blurred = cv2.GaussianBlur(big, (0, 0), max(size / 96.0, 0.8))
    sharp = cv2.addWeighted(big, 1.4, blurred, -0.4, 0)
    return Image.fromarray(sharp).convert("RGB")


def image_grid(rows: Sequence[Sequence[Image.Image]], labels: Sequence[str] | None = None, pad: int = 4) -> Image.Image:
    """Rows of equal-size images -> one grid image, each row optionally labelled on its left."""
    w, h = rows[0][0].size
    label_w = 0 if labels is None else 110
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, label_w + cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        y = pad + i * (h + pad)
        for j, image in enumerate(row):
            x = label_w + pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = np.asarray(image.convert("RGB"))
        if labels is not None:
            cv2.putText(
                canvas, labels[i], (6, y + h // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
            )
    return Image.fromarray(canvas)


@dataclass(frozen=True)
class Judgement:
    """What our expression model says about generated faces."""

    agreement: dict[str, float]  # per requested emotion: share classified as that emotion
    mean_agreement: float
    confusion: dict[str, dict[str, int]]  # requested -> predicted -> count
    diversity: dict[str, float]  # per emotion: mean pairwise cosine distance of face embeddings
    mean_diversity: float
    reference_diversity: float | None  # the same measure on real faces, for scale
    samples_per_emotion: int
    seconds_per_image: float
    #: per emotion: share of samples in which the face finder found a face (None: not checked); with a finder,
    #: ``agreement`` counts only those found *and* classified as requested
    face_found: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def face_embeddings(expression: Any, crops: np.ndarray) -> np.ndarray:
    """Pooled convolutional features of our expression network (each member's, concatenated), L2-normalised."""
    model = expression.model
    members = list(model.members) if hasattr(model, "members") else [model]
    x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))[:, None]
    with torch.inference_mode():
        feats = torch.cat(
            [m.features(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3)) for m in members], 1
        )
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats.numpy()


def mean_pairwise_distance(embeddings: np.ndarray) -> float:
    """Mean cosine distance over all distinct pairs of L2-normalised rows."""
    n = len(embeddings)
    if n < 2:
        return 0.0
    sims = embeddings @ embeddings.T
    return float((1.0 - sims[~np.eye(n, dtype=bool)]).mean())


def face_finder(pipeline: Any, size: int = 192, pad: int = 64) -> Callable[[np.ndarray], bool]:
    """Whether our face pipeline (``affectlens.analyzer.build_face_pipeline()``) finds a face in a sample: the S x S
    grey sample in [0, 1] upscaled to ``size`` and padded by ``pad`` grey pixels, as a photo of a face would be
    framed. Real FER2013 test faces treated alike (downscaled to 32x32 first) are found 87-100% of the time per
    emotion (``docs/generation.md``)."""

    def found(grey: np.ndarray) -> bool:
        img = cv2.resize((np.clip(grey, 0.0, 1.0) * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=128)
        return len(pipeline.locate(cv2.cvtColor(img, cv2.COLOR_GRAY2RGB))) > 0

    return found


def to_expression_input(grey: np.ndarray, size: int) -> np.ndarray:
    """Nx S x S grey in [0, 1] -> N x size x size in [-1, 1], the expression model's input scaling."""
    out = np.stack([cv2.resize(g.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC) for g in grey])
    return np.clip(out, 0.0, 1.0) * 2.0 - 1.0


def judge(
    pipe: EmotionDiffusionPipeline,
    expression: Any,
    per_emotion: int = 50,
    seed: int = 0,
    batch: int = 25,
    reference: np.ndarray | None = None,
    finder: Callable[[np.ndarray], bool] | None = None,
    **sample_kwargs: Any,
) -> Judgement:
    """Generate ``per_emotion`` faces for every emotion and classify them with ``expression`` (an
    ``ExpressionModel``). ``reference``: real faces (uint8 N x 48 x 48) for the diversity scale. ``finder``
    (e.g. ``face_finder``): a sample counts as agreeing only when the finder finds a face in it too, so that shadows
    or smudges the classifier happens to read as an emotion do not count."""
    import time

    agreement: dict[str, float] = {}
    confusion: dict[str, dict[str, int]] = {}
    diversity: dict[str, float] = {}
    face_found: dict[str, float] = {}
    seconds, count = 0.0, 0
    for k, emotion in enumerate(pipe.emotions):
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        grey: list[np.ndarray] = []
        while sum(len(g) for g in grey) < per_emotion:
            n = min(batch, per_emotion - sum(len(g) for g in grey))
            start = time.perf_counter()
            out = pipe(emotion, num_images=n, generator=generator, output_type="np", **sample_kwargs)
            assert isinstance(out, ImagePipelineOutput)
            grey.append(np.asarray(out.images))
            seconds += time.perf_counter() - start
            count += n
        samples = np.concatenate(grey)
        crops = to_expression_input(samples, expression.input_size)
        predicted = expression.predict_batch(crops).argmax(1)
        names = [CANONICAL_EMOTIONS[i] for i in predicted]
        hits = np.array([n == emotion for n in names])
        if finder is not None:
            found = np.array([finder(g) for g in samples])
            face_found[emotion] = float(found.mean())
            hits &= found
        agreement[emotion] = float(hits.mean())
        confusion[emotion] = {e: names.count(e) for e in CANONICAL_EMOTIONS}
        diversity[emotion] = mean_pairwise_distance(face_embeddings(expression, crops))
        logger.info("%s: agreement %.2f diversity %.3f", emotion, agreement[emotion], diversity[emotion])
    reference_diversity = None
    if reference is not None and len(reference):
        real = to_expression_input(reference.astype(np.float32) / 255.0, expression.input_size)
        reference_diversity = mean_pairwise_distance(face_embeddings(expression, real))
    return Judgement(
        agreement=agreement,
        mean_agreement=float(np.mean(list(agreement.values()))),
        confusion=confusion,
        diversity=diversity,
        mean_diversity=float(np.mean(list(diversity.values()))),
        reference_diversity=reference_diversity,
        samples_per_emotion=per_emotion,
        seconds_per_image=seconds / max(count, 1),
        face_found=face_found if finder is not None else None,
    )


#: The manifest entries of the shipped pipeline, by their path inside its folder.
PIPELINE_FILES: dict[str, str] = {
    "emotion-diffusion-index": "model_index.json",
    "emotion-diffusion-unet": "unet/diffusion_pytorch_model.safetensors",
    "emotion-diffusion-unet-config": "unet/config.json",
    "emotion-diffusion-scheduler": "scheduler/scheduler_config.json",
}


def shipped_pipeline_folder() -> Path:
    """The folder of the shipped pipeline, every file sha256-checked against the manifest."""
    from affectlens import weights

    root = weights.locate("emotion-diffusion-index").path.parent
    for name, relative in PIPELINE_FILES.items():
        found = weights.locate(name).path
        if found.resolve() != (root / relative).resolve():
            raise weights.WeightsError(f"{found}: the emotion-diffusion files must stay together under {root}")
    return root


def load_emotion_pipeline(path: str | Path | None = None) -> EmotionDiffusionPipeline:
    """The shipped pipeline (``weights/emotion-diffusion/``, sha256-checked) or a ``save_pretrained`` folder."""
    folder = shipped_pipeline_folder() if path is None else Path(path)
    if not (folder / "model_index.json").is_file():
        raise AffectLensError(f"{folder}: not a saved emotion pipeline (no model_index.json)")
    from diffusers.utils import logging as diffusers_logging

    verbosity, bars = diffusers_logging.get_verbosity(), diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()  # no loading bar, no notes about string annotations
    diffusers_logging.disable_progress_bar()
    try:
        pipe = EmotionDiffusionPipeline.from_pretrained(str(folder), local_files_only=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
        if bars:
            diffusers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe

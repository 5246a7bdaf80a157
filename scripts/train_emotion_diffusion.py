"""Train the offline emotion-conditioned face diffusion model (``generation/diffusion.py``) on FER2013 train.

Data: ``../shared/data/fer2013.npz``, the official train split only (28,709 grey 48x48 faces, downscaled to
32x32 with area averaging; the test split is never seen). Classes are drawn with probability proportional to the
square root of their size, so disgust (436 faces) is learnt without being memorised; mirror images are added at
random. The emotion label is replaced by the null class 10% of the time (classifier-free guidance).

Objective: v-prediction on a cosine noise schedule (1000 steps) with min-SNR-5 loss weighting, AdamW, linear
warm-up then cosine decay, an exponential moving average of the weights (the EMA is what ships), bf16 autocast on
CPU. Checkpoints every ``--checkpoint-every`` steps in ``--work``; a run that is stopped resumes where it was.

At the end the EMA pipeline is saved to ``--out`` (``save_pretrained``) and judged by our expression model:
share of samples classified as the requested emotion, per emotion, and the diversity of our face embeddings,
next to the same diversity measure on real FER2013 test faces. Results go to ``<out>/metrics.json``.

    python scripts/train_emotion_diffusion.py                # CPU, 2 threads: 70 min of training here (shipped)
    python scripts/judge_emotion_diffusion.py                # choose the guidance scale, judge, write the grid
    python scripts/train_emotion_diffusion.py --device cuda  # the same run on a GPU

The shipped weights: 5,000 steps of 64 faces (11 passes over the train split), 4,199 s of training on the 2-core
build machine (set ``OMP_WAIT_POLICY=PASSIVE`` when anything else runs beside it: spinning OpenMP threads
otherwise slow it several times).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import DDPMScheduler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.labels import CANONICAL_EMOTIONS, canonical_label  # noqa: E402
from generation.diffusion import SAMPLE_SIZE, EmotionDiffusionPipeline, build_scheduler, build_unet, judge  # noqa: E402

DEFAULT_NPZ = REPO.parent / "shared" / "data" / "fer2013.npz"
DEFAULT_OUT = REPO / "weights" / "emotion-diffusion"
DEFAULT_WORK = Path.home() / ".cache" / "affectlens" / "train" / "emotion-diffusion"
logger = logging.getLogger("train_emotion_diffusion")


def load_split(npz: Path, split: str, size: int = SAMPLE_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float32 N x 1 x size x size in [-1, 1], canonical labels, the original uint8 48x48 images) of one split."""
    with np.load(npz) as data:
        names = [str(n) for n in data["label_names"]]
        mask = data["split"] == list(data["split_names"]).index(split)
        images, labels = data["images"][mask], data["labels"][mask].astype(np.int64)
    to_canonical = np.array([CANONICAL_EMOTIONS.index(canonical_label(n) or "") for n in names])
    small = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
    x = (small.astype(np.float32) / 127.5 - 1.0)[:, None]
    return x, to_canonical[labels], images


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float = 5.0) -> torch.Tensor:
    """min(SNR, gamma) / (SNR + 1): the min-SNR weighting for a v-prediction loss."""
    alpha = scheduler.alphas_cumprod.to(t.device)[t]  # type: ignore[attr-defined]  # set in the scheduler's __init__
    snr = alpha / (1 - alpha)
    return torch.clamp(snr, max=gamma) / (snr + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="checkpoints (resumed from)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--null-prob", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (reference; the shipped model) or cuda")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--judge-per-emotion", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x, y, _ = load_split(args.npz, "train")
    counts = np.bincount(y, minlength=len(CANONICAL_EMOTIONS))
    class_p = np.sqrt(counts) / np.sqrt(counts).sum()
    sample_p = torch.from_numpy((class_p / counts)[y])
    logger.info("train: %d faces %s; class sampling %s", len(y), counts.tolist(), np.round(class_p, 3).tolist())
    data, labels = torch.from_numpy(x), torch.from_numpy(y)

    device = torch.device(args.device)
    unet = build_unet().to(device)  # type: ignore[arg-type]  # diffusers' .to wrapper is typed without self
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(build_scheduler().config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(args.steps - args.warmup, 1))) * 0.95 + 0.05

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "checkpoint.pt"
    step, seconds = 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        step, seconds = int(state["step"]), float(state["seconds"])
        logger.info("resumed at step %d (%.0f s trained)", step, seconds)

    null = len(CANONICAL_EMOTIONS)
    running = 0.0
    while step < args.steps:
        start = time.perf_counter()
        idx = torch.multinomial(sample_p, args.batch_size, replacement=True)
        x0 = data[idx]
        flip = torch.rand(len(idx)) < 0.5
        x0 = torch.where(flip[:, None, None, None], torch.flip(x0, dims=[-1]), x0).to(device)
        c = torch.where(torch.rand(len(idx)) < args.null_prob, null, labels[idx]).to(device)
        noise = torch.randn_like(x0)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(idx),), device=device)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        target = noise_scheduler.get_velocity(x0, noise, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(noisy, t, class_labels=c).sample
        per_sample = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * min_snr_weights(noise_scheduler, t)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        seconds += time.perf_counter() - start
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if step % 50 == 0:
            logger.info(
                "step %d/%d loss %.4f lr %.2e (%.2f s/step)",
                step,
                args.steps,
                running,
                schedule.get_last_lr()[0],
                seconds / step,
            )
        if step % args.checkpoint_every == 0 or step == args.steps:
            state = {
                "unet": unet.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "seconds": seconds,
            }
            torch.save(state, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)

    pipe = EmotionDiffusionPipeline(unet=ema.cpu(), scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(args.out))
    logger.info("saved %s (%.0f s of training)", args.out, seconds)

    from affectlens.registry import create

    expression = create("face_expression", "affectlens-expression")
    test_images = load_split(args.npz, "test")[2]
    reference = test_images[np.random.default_rng(0).choice(len(test_images), 350, replace=False)]
    result = judge(
        pipe,
        expression,
        per_emotion=args.judge_per_emotion,
        reference=reference,
        guidance_scale=args.guidance,
        num_inference_steps=args.inference_steps,
    )
    metrics = {
        "training": {
            "data": "FER2013 train split (28,709 faces), 32x32",
            "steps": step,
            "batch_size": args.batch_size,
            "seconds": round(seconds, 1),
            "device": args.device,
            "threads": args.threads,
        },
        "sampling": {"guidance_scale": args.guidance, "num_inference_steps": args.inference_steps},
        "judge": "affectlens-expression (the shipped expression model), 48x48 bicubic upscale of each sample",
        **result.to_dict(),
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()

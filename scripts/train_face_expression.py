"""Train ``affectlens-expression``, our facial-expression CNN, on FER2013 train.

Data: ``../shared/data/fer2013.npz`` (48x48 grey faces). The official train split (28,709 images) is cut into
train (90%) and validation (10%, stratified, seed 0); FER2013 test (7,178 images) is scored once at the end and
never used for any choice. Labels are mapped onto ``CANONICAL_EMOTIONS`` so the network's outputs are already
in AffectLens order.

Model: ``perception.face.expression.ExpressionNet`` (VGG-style, 4 stages of 3x3 convolutions, about 1.2 M
parameters, 48x48 input: real time on a laptop CPU). Training: SGD with Nesterov momentum, one-cycle learning
rate, label smoothing 0.1, bfloat16 autocast on CPU (float32 weights), augmentation done on the whole batch
(random affine: rotation, scale, shift, horizontal flip; brightness/contrast; random erasing). The epoch with
the best validation accuracy is kept. Calibration: one temperature fitted on the validation logits (L-BFGS on
the NLL); ECE (15 bins) is reported before and after on validation and test.

Output: ``weights/face-expression/affectlens-expression.safetensors`` (float32 state dict) and
``affectlens-expression.json`` (architecture, label order, temperature, metrics, the command and its time);
``--name`` names another model (``affectlens-expression-large``: two wider members, trained on a GPU).

    python scripts/train_face_expression.py                    # full run (2-core CPU: ~1 min per epoch)
    python scripts/train_face_expression.py --epochs 1 --limit 2000 --out /tmp/expr   # smoke run
    python scripts/train_face_expression.py --device cuda --members-only --work DIR ...  # members on a GPU,
    python scripts/train_face_expression.py --work DIR ...                          # then finalize anywhere
    python scripts/train_face_expression.py --teacher weights/face-expression-large/affectlens-expression-large.safetensors \
        --seeds 0 --work DIR --out DIR2   # distil: the teacher's soft targets (KL, T 4, weight 0.9) join the labels
    python scripts/train_face_expression.py --teacher ... --consistent ...   # the teacher reads each augmented batch
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.evaluation import classification_report, expected_calibration_error  # noqa: E402
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label  # noqa: E402
from perception.face.expression import (  # noqa: E402
    ExpressionEnsemble,
    ExpressionNet,
    ExpressionNetConfig,
    fit_temperature,
    load_expression_ensemble,
    load_expression_net,
)

DEFAULT_NPZ = REPO.parent / "shared" / "data" / "fer2013.npz"
DEFAULT_OUT = REPO / "weights" / "face-expression"
SEED = 0
logger = logging.getLogger("train_face_expression")


def validation_mask(y_train: np.ndarray) -> np.ndarray:
    """The validation split held out of FER2013 train: a stratified 10% of every class (seed ``SEED``), as a
    mask over the train split's canonical labels ``y_train``. Other scripts that must not tune on the expression
    model's training faces use it too."""
    rng = np.random.default_rng(SEED)
    mask = np.zeros(len(y_train), bool)
    for c in range(len(CANONICAL_EMOTIONS)):
        members = np.flatnonzero(y_train == c)
        mask[rng.choice(members, size=round(0.1 * len(members)), replace=False)] = True
    return mask


def fer2013_split_indices(npz: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(uint8 Nx48x48 images, canonical label indices, ``{"train", "val", "test"}`` -> indices into them):
    ``train`` is FER2013 train minus the validation split (``validation_mask``), which is ``val``."""
    with np.load(npz) as data:
        images, labels, splits = data["images"], data["labels"].astype(np.int64), data["split"]
        names, split_names = [str(n) for n in data["label_names"]], list(data["split_names"])
    to_canonical = np.array([CANONICAL_EMOTIONS.index(canonical_label(n) or "") for n in names])
    y = to_canonical[labels]
    train_idx = np.flatnonzero(splits == split_names.index("train"))
    test_idx = np.flatnonzero(splits == split_names.index("test"))
    val_mask = validation_mask(y[train_idx])
    return images, y, {"train": train_idx[~val_mask], "val": train_idx[val_mask], "test": test_idx}


def load_fer2013(npz: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train", "val", "test"}`` -> (uint8 Nx48x48 images, canonical label indices)."""
    images, y, splits = fer2013_split_indices(npz)
    return {name: (images[idx], y[idx]) for name, idx in splits.items()}


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NxHxW -> float Nx1xHxW in [-1, 1] (the same scaling as ``AffectLensExpression.preprocess``)."""
    return (torch.from_numpy(images).float()[:, None] / 255.0 - 0.5) * 2.0


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random affine (rotation +-15 deg, scale 0.85-1.15, shift +-10%, flip), contrast/brightness, erasing."""
    n = x.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.85, 1.15)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, uniform(-0.1, 0.1)], 1), torch.stack([sin * flip, cos, uniform(-0.1, 0.1)], 1)],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * uniform(0.7, 1.3)[:, None, None, None] + uniform(-0.2, 0.2)[:, None, None, None]
    # Random erasing: one rectangle (10-30% of the side per dimension... up to ~1/9 of the area) in half the images.
    size = x.shape[-1]
    erase = torch.rand(n, generator=generator) < 0.5
    h = (uniform(0.1, 0.4) * size).long()
    w = (uniform(0.1, 0.4) * size).long()
    top = (torch.rand(n, generator=generator) * (size - h)).long()
    left = (torch.rand(n, generator=generator) * (size - w)).long()
    rows = torch.arange(size)[None, :]
    mask_r = (rows >= top[:, None]) & (rows < (top + h)[:, None])
    mask_c = (rows >= left[:, None]) & (rows < (left + w)[:, None])
    mask = (mask_r[:, :, None] & mask_c[:, None, :] & erase[:, None, None])[:, None]
    return x.masked_fill(mask, 0.0).clamp(-1.5, 1.5)


@torch.no_grad()
def logits_of(model: torch.nn.Module, x: torch.Tensor, batch: int = 512, flip: bool = False) -> torch.Tensor:
    """Logits in batches; with ``flip``, the mean of the image's and its mirror image's logits."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device)
        logits = model(xb)
        if flip:
            logits = (logits + model(torch.flip(xb, dims=[-1]))) / 2
        out.append(logits.float().cpu())
    return torch.cat(out)


def report(logits: torch.Tensor, y: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
    probs = torch.softmax(logits / temperature, dim=1).numpy()
    rep = classification_report(y, probs.argmax(1), list(CANONICAL_EMOTIONS))
    rep["ece"] = expected_calibration_error(probs, y)
    rep["nll"] = float(F.cross_entropy(logits / temperature, torch.from_numpy(y)))
    return rep


def teacher_logits(path: Path, x: torch.Tensor, device: str, bf16: bool) -> torch.Tensor:
    """The finalized model at ``path`` (its card beside it, ``.json``) run over ``x`` once: its ensemble's mean
    logits, mirror-averaged when its card says so; the soft targets of distillation."""
    meta = json.loads(path.with_suffix(".json").read_text())
    teacher = load_expression_ensemble(path, meta).to(device)
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        return logits_of(teacher, x, flip=bool(meta.get("flip_average", False)))


class OnlineTeacher(torch.nn.Module):
    """The finalized model at ``path`` kept beside the student (``--consistent``): it reads the very augmented
    views the student trains on, so the soft targets always describe the image the student sees (Beyer et al.,
    "Knowledge distillation: a good teacher is patient and consistent", 2022). Mirror-averaged when its card says
    so (the face and its mirror image in one batch, as ``AffectLensExpression`` runs it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        meta = json.loads(path.with_suffix(".json").read_text())
        self.model = load_expression_ensemble(path, meta).eval()
        self.flip = bool(meta.get("flip_average", False))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flip:
            return self.model(x).float()
        both = self.model(torch.cat([x, torch.flip(x, dims=[-1])])).float()
        return (both[: len(x)] + both[len(x) :]) / 2


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.'s soft-target term: KL(teacher || student) at ``temperature``, times temperature^2 so its
    gradients keep their scale as the temperature changes."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    return F.kl_div(log_student, F.softmax(soft / temperature, dim=1), reduction="batchmean") * temperature**2


def train_member(
    args: argparse.Namespace,
    seed: int,
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    soft: torch.Tensor | None = None,
    teacher: OnlineTeacher | None = None,
) -> Path:
    """Train one ``ExpressionNet`` with initialisation and augmentation seed ``seed``; keep the epoch with the
    best validation accuracy; write ``member-<seed>.safetensors`` and ``.json`` into ``args.work``. When
    ``args.teacher`` distils, either ``soft``: the teacher's logits for every unaugmented training image
    (``teacher_logits``), or ``teacher``: the teacher itself, run on every augmented batch (``--consistent``)."""
    torch.manual_seed(seed)
    started = time.time()
    (xtr_u8, ytr), (xva_u8, yva) = data["train"], data["val"]
    if args.limit:
        pick = np.random.default_rng(SEED).choice(len(xtr_u8), size=min(args.limit, len(xtr_u8)), replace=False)
        xtr_u8, ytr = xtr_u8[pick], ytr[pick]
        soft = None if soft is None else soft[pick]
    xtr, xva = to_input(xtr_u8), to_input(xva_u8)
    ytr_t = torch.from_numpy(ytr)
    logger.info("member %d: train %d, val %d images", seed, len(xtr), len(xva))
    if args.teacher is not None and (soft is None) == (teacher is None):
        raise ValueError("--teacher needs either the teacher's logits (teacher_logits) or the teacher itself")
    soft = None if soft is None else soft.to(args.device)
    teacher = None if teacher is None else teacher.to(args.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    config = ExpressionNetConfig(widths=tuple(args.widths), depths=tuple(args.depths), dropout=args.dropout)
    model = ExpressionNet(config).to(args.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    logger.info("parameters: %.2f M", sum(p.numel() for p in model.parameters()) / 1e6)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=0.9,
        nesterov=True,
    )
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(seed)
    best: dict[str, Any] = {"val_accuracy": -1.0}
    history = []
    for epoch in range(args.epochs):
        model.train()
        t0 = time.time()
        order = torch.randperm(len(xtr), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * args.batch_size : (step + 1) * args.batch_size]
            # Augmentation draws its random numbers on the CPU, so the stream is the same on any device.
            xb = augment(xtr[idx], generator).to(args.device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(xb).float()
                loss = F.cross_entropy(logits, ytr_t[idx].to(args.device), label_smoothing=args.label_smoothing)
                if soft is not None or teacher is not None:
                    # fixed targets (the unaugmented image's, for every view of it) or the teacher reading this view
                    target = soft[idx.to(args.device)] if soft is not None else teacher(xb)  # type: ignore[misc]
                    kd = distillation_loss(logits, target, args.distill_temperature)
                    loss = (1 - args.distill_alpha) * loss + args.distill_alpha * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        val_acc = float((logits_of(model, xva).argmax(1).numpy() == yva).mean())
        history.append(
            {"epoch": epoch + 1, "loss": total / len(xtr), "val_accuracy": val_acc, "seconds": time.time() - t0}
        )
        logger.info("epoch %d loss %.4f val acc %.4f (%.0f s)", epoch + 1, total / len(xtr), val_acc, time.time() - t0)
        if val_acc > best["val_accuracy"]:
            best = {
                "val_accuracy": val_acc,
                "epoch": epoch + 1,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"member-{seed}.safetensors"
    state = {k: v.float().contiguous() for k, v in best["state"].items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(path))
    meta = {
        "seed": seed,
        "config": asdict(config),
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_accuracy"],
        "seconds": round(time.time() - started),
        "command": "python scripts/train_face_expression.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "hyper_parameters": {
            k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "bf16")
        },
        "teacher": None
        if args.teacher is None
        else {
            "file": args.teacher.name,
            "sha256": hashlib.sha256(args.teacher.read_bytes()).hexdigest(),
            "alpha": args.distill_alpha,
            "temperature": args.distill_temperature,
            "consistent": teacher is not None,
        },
        "history": history,
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_member(path: Path) -> tuple[ExpressionNet, dict[str, Any]]:
    meta = json.loads(path.with_suffix(".json").read_text())
    return load_expression_net(path, meta), meta


def finalize(
    members: list[Path],
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    out: Path,
    seconds: float,
    name: str = "affectlens-expression",
    flip_average: str = "auto",
) -> dict[str, Any]:
    """Average the members' logits, fit the temperature on validation, score test once, write the weights.
    ``flip_average``: ``auto`` keeps mirror averaging if it helps on validation; ``on`` / ``off`` fix it (``off``
    when the model's size leaves no room in the speed budget for a second pass)."""
    loaded = [load_member(path) for path in members]
    model = ExpressionEnsemble([m for m, _ in loaded]).eval()
    (xva_u8, yva), (xte_u8, yte) = data["val"], data["test"]
    xva, xte = to_input(xva_u8), to_input(xte_u8)
    # Mirror averaging is kept only if it helps on validation (test is never used for a choice).
    val_plain, val_flip = logits_of(model, xva), logits_of(model, xva, flip=True)
    accuracy = {
        name: float((v.argmax(1).numpy() == yva).mean()) for name, v in (("plain", val_plain), ("flip", val_flip))
    }
    flip = accuracy["flip"] > accuracy["plain"] if flip_average == "auto" else flip_average == "on"
    val_logits, test_logits = (val_flip if flip else val_plain), logits_of(model, xte, flip=flip)
    temperature = fit_temperature(val_logits, torch.from_numpy(yva))
    per_member = [
        {"seed": meta["seed"], "val_accuracy": meta["val_accuracy"],
         "test_accuracy": float((logits_of(m, xte).argmax(1).numpy() == yte).mean())}
        for m, meta in loaded
    ]  # fmt: skip
    other = logits_of(model, xte, flip=not flip)
    metrics = {
        "temperature": temperature,
        "flip_average": flip,
        "flip_average_choice": flip_average,
        "val_accuracy_plain_vs_flip": accuracy,
        "test_accuracy_other_choice": float((other.argmax(1).numpy() == yte).mean()),
        "members": per_member,
        "val": {"uncalibrated": report(val_logits, yva), "calibrated": report(val_logits, yva, temperature)},
        "test": {"uncalibrated": report(test_logits, yte), "calibrated": report(test_logits, yte, temperature)},
    }
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.float().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(out / f"{name}.safetensors"))
    meta = {
        "model": name,
        "architecture": "ExpressionEnsemble: the mean logits of ExpressionNet members (perception/face/expression.py)",
        "members": len(loaded),
        "config": loaded[0][1]["config"],
        "labels": list(CANONICAL_EMOTIONS),
        "temperature": temperature,
        "flip_average": flip,
        "preprocess": "grey, square crop of the face box, resized to 48x48, (x / 255 - 0.5) * 2",
        "training": {
            "data": "FER2013 official train split minus a stratified 10% validation split (seed 0); "
            "temperature fitted on that validation split; FER2013 test scored once",
            "command": "python scripts/train_face_expression.py " + " ".join(sys.argv[1:]),
            "seconds": round(seconds),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "members": [meta for _, meta in loaded],
        },
        "metrics": metrics,
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--name", default="affectlens-expression", help="the model's name: its files' and card's")
    parser.add_argument("--epochs", type=int, default=45)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 2, 2, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (reference; every shipped member) or cuda to train faster")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="float32 throughout (slower)")
    parser.add_argument("--limit", type=int, default=0, help="a random N of the training images (smoke runs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one ensemble member per seed")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path.home() / ".cache" / "affectlens" / "train" / "face-expression",
        help="members go here",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        help="distil from this finalized model (a .safetensors with its .json card beside it), e.g. "
        "weights/face-expression-large/affectlens-expression-large.safetensors",
    )
    parser.add_argument("--distill-alpha", type=float, default=0.9, help="the soft targets' share of the loss")
    parser.add_argument("--distill-temperature", type=float, default=4.0)
    parser.add_argument(
        "--consistent",
        action="store_true",
        help="with --teacher: run the teacher on every augmented batch (the view the student sees) instead of "
        "fixed targets for the unaugmented images",
    )
    parser.add_argument(
        "--flip-average",
        choices=("auto", "on", "off"),
        default="auto",
        help="mirror averaging of the finalized model: kept if it helps on validation (auto), or fixed",
    )
    parser.add_argument("--retrain", action="store_true", help="train members again even if --work has them")
    parser.add_argument(
        "--members-only",
        action="store_true",
        help="train the members into --work and stop (finalize later, e.g. on another machine, by a run without it)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    started = time.time()
    data = load_fer2013(args.npz)
    soft, teacher = None, None
    if args.consistent and args.teacher is None:
        parser.error("--consistent distils from --teacher: name one")
    if args.consistent:
        teacher = OnlineTeacher(args.teacher)
    elif args.teacher is not None:  # one pass of the teacher for all members
        t0 = time.time()
        soft = teacher_logits(args.teacher, to_input(data["train"][0]), args.device, args.bf16).cpu()
        accuracy = float((soft.argmax(1).numpy() == data["train"][1]).mean())
        logger.info("teacher %s: train accuracy %.4f (%.0f s)", args.teacher.name, accuracy, time.time() - t0)
    members = []
    for seed in args.seeds:
        path = args.work / f"member-{seed}.safetensors"
        if path.exists() and path.with_suffix(".json").exists() and not args.retrain:
            logger.info("member %d: reusing %s", seed, path)
        else:
            path = train_member(args, seed, data, soft, teacher)
        members.append(path)
    if args.members_only:
        print(f"members in {args.work}: {', '.join(p.name for p in members)}")
        return
    meta = finalize(members, data, args.out, time.time() - started, args.name, args.flip_average)
    m = meta["metrics"]
    for member in m["members"]:
        print(f"member seed {member['seed']}: val {member['val_accuracy']:.4f} test {member['test_accuracy']:.4f}")
    rep = m["test"]["calibrated"]
    print(
        f"test: accuracy {rep['accuracy']:.4f} macro-F1 {rep['macro_f1']:.4f} (mirror averaging {meta['flip_average']})"
    )
    print(
        f"ECE test before/after temperature {meta['temperature']:.3f}: "
        f"{m['test']['uncalibrated']['ece']:.4f} -> {rep['ece']:.4f}"
    )
    print(f"wrote {args.out}; members' training time {sum(x['seconds'] for x in meta['training']['members'])} s")


if __name__ == "__main__":
    main()

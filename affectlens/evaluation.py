"""``affectlens eval``: score a model on a labelled image folder (one sub-folder per label).

Folder names are mapped to the canonical emotions by ``affectlens.labels.LABEL_MAP``; labels without a
canonical class, unknown to the table, or missing from the model are counted under ``excluded``.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from affectlens.errors import MediaError
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.registry import create_face_detector, create_face_expression
from perception.media import load_image

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Macro F1 averages over the classes present in ``y_true``.
    """
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    tp = np.diag(confusion)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    n = int(support.sum())
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / n) if n else 0.0,
        "per_class": {
            labels[i]: {
                "precision": round(float(precision[i]), 4),
                "recall": round(float(recall[i]), 4),
                "f1": round(float(f1[i]), 4),
                "support": int(support[i]),
            }
            for i in range(k)
            if present[i] or predicted[i] > 0
        },
        "confusion": {"labels": labels, "matrix": confusion.tolist()},
    }


def _label_folders(data_dir: Path, model_labels: tuple[str, ...]) -> tuple[dict[Path, str], dict[str, int]]:
    folders: dict[Path, str] = {}
    excluded: dict[str, int] = {}
    for sub in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        count = sum(1 for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        try:
            canonical = canonical_label(sub.name)
        except KeyError:
            canonical = None
        if canonical is None or canonical not in model_labels:
            excluded[sub.name] = excluded.get(sub.name, 0) + count
        else:
            folders[sub] = canonical
    return folders, excluded


def evaluate_face_expression(
    data_dir: str | Path,
    model: str | None = None,
    detect: bool = False,
    limit_per_class: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Evaluate a facial expression model on ``data_dir/<label>/*.png`` (face crops by default).

    With ``detect`` the largest detected face is classified; images without a face count as errors.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MediaError(str(data_dir), "not a directory (expected one sub-folder per label)")
    expression = create_face_expression(model)
    detector = create_face_detector() if detect else None
    folders, excluded = _label_folders(data_dir, CANONICAL_EMOTIONS)
    if not folders:
        raise MediaError(str(data_dir), "no sub-folder is named after a known emotion label")
    crops: list[np.ndarray] = []
    truth: list[int] = []
    errors: Counter[str] = Counter()
    for folder, label in folders.items():
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        for file in files[:limit_per_class]:
            try:
                image = load_image(file)
            except MediaError as exc:
                errors["unreadable"] += 1
                logger.warning("%s", exc)
                continue
            box = None
            if detector is not None:
                found = detector.detect(image)
                if len(found) == 0:
                    errors["no_face"] += 1
                    continue
                areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
                box = found.boxes[int(np.argmax(areas))]
            crops.append(expression.preprocess(image, box))
            truth.append(CANONICAL_EMOTIONS.index(label))
    if not crops:
        raise MediaError(str(data_dir), "no usable image found")
    batch = np.stack(crops)
    probs = np.concatenate(
        [expression.predict_batch(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)]
    )
    report = classification_report(np.array(truth), probs.argmax(1), list(CANONICAL_EMOTIONS))
    return {
        "task": "face-expression",
        "model": expression.name,
        "data": str(data_dir),
        **report,
        "excluded": excluded,
        "errors": dict(errors),
    }

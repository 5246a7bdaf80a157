"""The expression-editing figure for docs/generation.md: the sample portrait (public domain) before and after
editing to each emotion, each panel captioned with what our expression model reads, plus the time per edit.

    python scripts/make_edit_figure.py [-o docs/generation/edit-before-after.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.labels import CANONICAL_EMOTIONS  # noqa: E402
from demo.samples import load_portrait  # noqa: E402
from generation.diffusion import image_grid  # noqa: E402
from generation.edit import build_expression_editor  # noqa: E402

TARGETS = ("happiness", "sadness", "surprise", "fear", "disgust", "anger")


def caption(image: np.ndarray, text: str, size: int = 224) -> Image.Image:
    panel = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    cv2.rectangle(panel, (0, size - 22), (size, size), (255, 255, 255), -1)
    cv2.putText(panel, text, (4, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return Image.fromarray(panel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "generation" / "edit-before-after.png")
    args = parser.parse_args()
    editor = build_expression_editor()
    portrait = load_portrait()
    _points, box = editor.locate(portrait)
    x1, y1, x2, y2 = (int(v) for v in box)
    pad = int(0.35 * max(x2 - x1, y2 - y1))
    crop = (max(0, x1 - pad), max(0, y1 - pad), min(portrait.shape[1], x2 + pad), min(portrait.shape[0], y2 + pad))

    def cut(image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[crop[1] : crop[3], crop[0] : crop[2]])

    assert editor.expression is not None
    before = editor.expression.predict_batch(editor.expression.preprocess(portrait, np.asarray(box))[None])[0]
    top = int(before.argmax())
    panels = [caption(cut(portrait), f"original: {CANONICAL_EMOTIONS[top]} {before[top]:.0%}")]
    rows: dict[str, dict[str, object]] = {}
    for target in TARGETS:
        start = time.perf_counter()
        result = editor.edit(portrait, target)
        seconds = time.perf_counter() - start
        read = result.reading
        label = f"{target}: reads {read.label} {read.confidence:.0%}" if read else target
        panels.append(caption(cut(result.image), label))
        rows[target] = {"reads": read.label if read else None, "confidence": read.confidence if read else None,
                        "seconds": round(seconds, 3)}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    image_grid([panels[:4], panels[4:]]).save(args.output)
    original = dict(zip(CANONICAL_EMOTIONS, before.round(3).tolist(), strict=True))
    print(json.dumps({"original_reading": original, "edits": rows}, indent=2))


if __name__ == "__main__":
    main()

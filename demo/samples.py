"""Sample media the quickstart and the demo use: a public-domain portrait and a short video made from it.

``assets/astronaut.jpg`` is NASA's portrait of Eileen Collins (public domain), as shipped in scikit-image.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from affectlens.visualize import VideoWriter

ASSETS = Path(__file__).resolve().parent / "assets"
PORTRAIT = ASSETS / "astronaut.jpg"


def load_portrait() -> np.ndarray:
    """The sample portrait as RGB uint8."""
    bgr = cv2.imread(str(PORTRAIT))
    if bgr is None:
        raise FileNotFoundError(f"{PORTRAIT}: sample portrait missing from the checkout")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def make_sample_video(
    path: str | os.PathLike[str], seconds: float = 4.0, fps: int = 10, size: tuple[int, int] = (480, 360)
) -> Path:
    """Write an MP4 that pans and zooms over the portrait, then mirrors it: one real face, moving.

    The last second also darkens the frame, so the result shows quality changing over time.
    """
    portrait = load_portrait()
    h, w = portrait.shape[:2]
    out_w, out_h = size
    n = max(1, round(seconds * fps))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps, out_w, out_h) as writer:
        for i in range(n):
            t = i / max(n - 1, 1)
            zoom = 1.0 + 0.6 * t  # from the full portrait to a closer view of the face
            cw, ch = w / zoom, (w / zoom) * out_h / out_w
            cx = w * (0.5 - 0.06 * t)
            cy = min(max(h * (0.45 - 0.15 * t), ch / 2), h - ch / 2)
            x1, y1 = int(np.clip(cx - cw / 2, 0, w - cw)), int(np.clip(cy - ch / 2, 0, h - ch))
            frame = cv2.resize(
                portrait[y1 : y1 + int(ch), x1 : x1 + int(cw)], (out_w, out_h), interpolation=cv2.INTER_AREA
            )
            if i >= n - fps:
                frame = (frame[:, ::-1] * 0.6).astype(np.uint8)
            writer.write(frame)
    return path

"""Draw results on images and write annotated videos (boxes, mesh points, expression bars)."""

from __future__ import annotations

import os
from collections.abc import Iterable

import cv2
import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import FaceObservation

#: One RGB colour per canonical emotion, used by every plot and overlay.
EMOTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "neutral": (160, 160, 160),
    "happiness": (255, 200, 0),
    "sadness": (60, 110, 230),
    "surprise": (255, 120, 220),
    "fear": (150, 80, 200),
    "disgust": (60, 170, 60),
    "anger": (230, 40, 40),
}


def draw_faces(image: np.ndarray, faces: Iterable[FaceObservation], mesh: bool = True) -> np.ndarray:
    """Return a copy of the RGB ``image`` with each face's box, label, mesh and expression bars."""
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    font = 0.4 * thick
    for face in faces:
        x1, y1, x2, y2 = (round(v) for v in face.box)
        label = face.expression.label
        colour = EMOTION_COLOURS[label]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        if mesh and face.landmarks is not None:
            for x, y in face.landmarks[:, :2].astype(int)[::3]:
                cv2.circle(out, (int(x), int(y)), 0, (0, 255, 255), -1)
        text = f"#{face.index} {label} {face.expression.confidence:.0%}"
        cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick, cv2.LINE_AA)
        bar_x, bar_w = x2 + 4, max(40, (x2 - x1) // 2)
        if bar_x + bar_w + 60 * thick > w:
            bar_x = max(0, x1 - bar_w - 60 * thick)
        row = max(8, round(10 * thick))
        for k, emotion in enumerate(CANONICAL_EMOTIONS):
            y = y1 + k * row
            p = face.expression.probabilities[emotion]
            cv2.rectangle(out, (bar_x, y), (bar_x + round(bar_w * p), y + row - 2), EMOTION_COLOURS[emotion], -1)
            cv2.putText(
                out, emotion[:4], (bar_x + bar_w + 2, y + row - 3), cv2.FONT_HERSHEY_SIMPLEX, font * 0.8,
                (255, 255, 255), 1, cv2.LINE_AA,
            )  # fmt: skip
    return out


class VideoWriter:
    """H.264 MP4 writer over PyAV; frames are RGB uint8 of one size. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], fps: float, width: int, height: int) -> None:
        import av

        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=max(1, round(fps)))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2
        self._stream.pix_fmt = "yuv420p"

    def write(self, image: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image[: self._stream.height, : self._stream.width], format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

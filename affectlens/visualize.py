"""Draw results on images and write annotated videos (boxes, mesh points, expression bars); blur faces for
privacy (``blur_faces``: ``--blur-faces`` in ``affectlens analyze`` and ``annotate``, an option in the demo)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import FaceObservation, FrameResult

if TYPE_CHECKING:
    from perception.media import Frame

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


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    """Text with a dark outline, readable on any background."""
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _face_details(face: FaceObservation) -> list[str]:
    """Short text lines for the overlay: head pose, gaze, valence/arousal and the strongest AUs."""
    lines = []
    if face.pose is not None:
        lines.append(f"yaw {face.pose.yaw:+.0f} pitch {face.pose.pitch:+.0f} roll {face.pose.roll:+.0f}")
    if face.gaze is not None:
        lines.append(f"gaze {face.gaze.yaw:+.0f}/{face.gaze.pitch:+.0f}")
    if face.expression.valence is not None and face.expression.arousal is not None:
        lines.append(f"V {face.expression.valence:+.2f} A {face.expression.arousal:+.2f}")
    if face.aus:
        strongest = [f"{au}:{v:.1f}" for au, v in sorted(face.aus.items(), key=lambda kv: -kv[1])[:3] if v >= 1.0]
        if strongest:
            lines.append(" ".join(strongest))
    return lines


def blur_faces(
    image: np.ndarray, boxes: Iterable[tuple[float, float, float, float]], margin: float = 0.25
) -> np.ndarray:
    """A copy of the RGB ``image`` with every face box (XYXY pixels, grown by ``margin`` of its size on each side)
    made unrecognisable: pixelated to about 6 blocks across, then blurred, inside an ellipse with a soft edge.

    Pixelating first throws the detail away (a blur alone can be partly undone); the ellipse keeps the
    surroundings as they were."""
    out = image.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in boxes:
        bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx1, cy1 = int(max(0, np.floor(x1 - margin * bw))), int(max(0, np.floor(y1 - margin * bh)))
        cx2, cy2 = int(min(w, np.ceil(x2 + margin * bw))), int(min(h, np.ceil(y2 + margin * bh)))
        if cx2 - cx1 < 2 or cy2 - cy1 < 2:
            continue
        patch = out[cy1:cy2, cx1:cx2]
        ph, pw = patch.shape[:2]
        blocks = max(2, round(6 * pw / max(bw * (1 + 2 * margin), 1.0)))
        small = cv2.resize(patch, (blocks, max(2, round(blocks * ph / pw))), interpolation=cv2.INTER_AREA)
        coarse = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_NEAREST)
        k = 2 * max(1, round(min(pw, ph) / 10)) + 1
        hidden = cv2.GaussianBlur(coarse, (k, k), 0)
        ellipse = np.zeros((ph, pw), np.float32)
        cv2.ellipse(ellipse, (pw // 2, ph // 2), (max(1, pw // 2), max(1, ph // 2)), 0, 0, 360, 1.0, -1)
        soft = np.asarray(cv2.GaussianBlur(ellipse, (k, k), 0), np.float32)
        mask = soft[..., None] if patch.ndim == 3 else soft
        out[cy1:cy2, cx1:cx2] = np.round(patch * (1 - mask) + hidden * mask).astype(out.dtype)
    return out


def draw_faces(
    image: np.ndarray, faces: Iterable[FaceObservation], mesh: bool = True, blur: bool = False
) -> np.ndarray:
    """Return a copy of the RGB ``image`` with each face's box, label, mesh and expression bars; with ``blur``,
    the faces are blurred first (``blur_faces``) and their mesh points are not drawn."""
    faces = list(faces)
    out = blur_faces(image, [f.box for f in faces]) if blur else image.copy()
    mesh = mesh and not blur
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
        who = f"track {face.track_id}" if face.track_id is not None else f"#{face.index}"
        shown = face.state if face.state is not None else label
        text = f"{who} {shown} {face.expression.confidence:.0%}"
        cv2.putText(out, text, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick, cv2.LINE_AA)
        below = max(y2, y1 + len(CANONICAL_EMOTIONS) * max(8, round(10 * thick)))  # under the box and the bars
        for k, line in enumerate(_face_details(face)):  # pose, gaze, valence/arousal, strongest AUs
            y = below + round((k + 1) * 12 * thick)
            _text(out, line, (x1, min(h - 2, y)), font * 0.8, (255, 255, 255))
        bar_x, bar_w = x2 + 4, max(40, (x2 - x1) // 2)
        if bar_x + bar_w + 60 * thick > w:
            bar_x = max(0, x1 - bar_w - 60 * thick)
        row = max(8, round(10 * thick))
        for k, emotion in enumerate(CANONICAL_EMOTIONS):
            y = y1 + k * row
            p = face.expression.probabilities[emotion]
            cv2.rectangle(out, (bar_x, y), (bar_x + round(bar_w * p), y + row - 2), EMOTION_COLOURS[emotion], -1)
            _text(out, emotion[:4], (bar_x + bar_w + 2, y + row - 3), font * 0.8, (255, 255, 255))
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


class AnnotatedVideo:
    """An ``on_frame`` callback for ``Analyzer.analyze_video`` that writes the annotated frames as an MP4.

    The file is opened at the first frame (so a video that fails before any frame leaves no file) and
    ``keyframe`` keeps the first annotated frame that shows a face; ``blur`` blurs every face. Use as a context
    manager.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, blur: bool = False) -> None:
        self.path = path
        self.fps = fps
        self.blur = blur
        self.keyframe: np.ndarray | None = None
        self._writer: VideoWriter | None = None

    def __call__(self, frame: Frame, result: FrameResult) -> None:
        if self._writer is None:
            h, w = frame.image.shape[:2]
            self._writer = VideoWriter(self.path, self.fps, w, h)
        drawn = draw_faces(frame.image, result.faces, blur=self.blur)
        self._writer.write(drawn)
        if self.keyframe is None and result.faces:
            self.keyframe = drawn

    @property
    def written(self) -> bool:
        return self._writer is not None

    def __enter__(self) -> AnnotatedVideo:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

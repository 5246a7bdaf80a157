"""``Analyzer``: the public entry point that turns an image, a video or an array into typed results."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from affectlens import __version__
from affectlens.errors import MediaError, WeightsError
from affectlens.registry import create_face_detector, create_face_expression, create_face_landmarker
from affectlens.types import AnalysisResult, FrameResult
from perception.face.pipeline import FacePipeline
from perception.media import DEFAULT_LIMITS, Frame, MediaLimits, iter_video_frames, load_image, open_media, probe

logger = logging.getLogger(__name__)

#: Frames analysed per second of video when the caller does not say.
DEFAULT_VIDEO_FPS = 5.0


def build_face_pipeline(
    detector: str = "centerface",
    expression: str = "fer-mini-xception",
    landmarker: str | None = "mediapipe-facemesh",
    fallback: str | None = "haar",
) -> FacePipeline:
    """Assemble the default face pipeline from registered names (``None`` leaves a part out).

    If the main detector cannot be built (its runtime is missing), the fallback takes its place.
    """
    fallback_det = create_face_detector(fallback) if fallback else None
    try:
        main = create_face_detector(detector)
    except (ImportError, WeightsError) as exc:
        if fallback_det is None:
            raise
        logger.warning("face detector %r unavailable (%s); using %r", detector, exc, fallback)
        main, fallback_det = fallback_det, None
    return FacePipeline(
        detector=main,
        expression=create_face_expression(expression),
        landmarker=create_face_landmarker(landmarker) if landmarker else None,
        fallback=fallback_det,
    )


class Analyzer:
    """Analyse images and videos: every face in every sampled frame, with expression and quality.

    >>> from affectlens import Analyzer
    >>> result = Analyzer().analyze("photo.jpg")
    >>> result.faces[0].expression.label
    'happiness'
    """

    def __init__(self, face: FacePipeline | None = None, limits: MediaLimits = DEFAULT_LIMITS) -> None:
        self.face = face if face is not None else build_face_pipeline()
        self.limits = limits

    def _result(self, source: str, frames: list[FrameResult], **kwargs: Any) -> AnalysisResult:
        warnings = list(kwargs.pop("warnings", []))
        if not any(frame.faces for frame in frames):
            warnings.append(f"{source}: no face found")
        return AnalysisResult(
            source=source,
            frames=tuple(frames),
            models=self.face.describe(),
            weights=self.face.weight_files(),
            warnings=tuple(warnings),
            **kwargs,
        )

    def analyze_image(self, image: str | os.PathLike[str] | np.ndarray, source: str | None = None) -> AnalysisResult:
        """One image (path or HxW[xC] array) -> a one-frame result; ``source`` names an array in the result."""
        if source is None:
            source = "<array>" if isinstance(image, np.ndarray) else str(image)
        rgb = load_image(image, self.limits)
        frame = FrameResult(index=0, time=0.0, faces=self.face(rgb))
        return self._result(
            source, [frame], kind="image", width=rgb.shape[1], height=rgb.shape[0], fps=None, duration=None,
            settings={"affectlens": __version__},
        )  # fmt: skip

    def analyze_video(
        self,
        path: str | os.PathLike[str],
        fps: float | None = DEFAULT_VIDEO_FPS,
        max_frames: int | None = None,
        on_frame: Callable[[Frame, FrameResult], None] | None = None,
    ) -> AnalysisResult:
        """Sample ``fps`` frames per second of video (all frames when ``None``) and analyse each.

        ``on_frame(frame, result)`` is called for every analysed frame (e.g. to write an annotated video
        without decoding twice); frames are not kept in memory.
        """
        _, info = probe(path, self.limits)
        if info is None:
            raise MediaError(str(path), "is an image, not a video")
        warnings: list[str] = []
        frames = []
        for frame in iter_video_frames(path, fps=fps, max_frames=max_frames, limits=self.limits, warnings=warnings):
            result = FrameResult(index=frame.index, time=frame.time, faces=self.face(frame.image))
            frames.append(result)
            if on_frame is not None:
                on_frame(frame, result)
        return self._result(
            str(path), frames, kind="video", width=info.width, height=info.height, fps=info.fps,
            duration=info.duration, warnings=warnings,
            settings={"affectlens": __version__, "sample_fps": fps, "max_frames": max_frames},
        )  # fmt: skip

    def analyze(
        self,
        source: str | os.PathLike[str] | np.ndarray,
        fps: float | None = DEFAULT_VIDEO_FPS,
        max_frames: int | None = None,
    ) -> AnalysisResult:
        """Analyse an image or video path (decided by content, not extension) or an image array."""
        if isinstance(source, np.ndarray):
            return self.analyze_image(source)
        _, rgb, _ = open_media(source, self.limits)  # refuses anything that is not a path, with a MediaError
        if rgb is not None:
            return self.analyze_image(rgb, source=str(source))
        return self.analyze_video(source, fps=fps, max_frames=max_frames)

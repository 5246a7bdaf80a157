"""Decode images and videos into RGB uint8 arrays, with clear errors for bad input.

Images go through Pillow (with a pixel cap against decompression bombs); videos through PyAV, sampled
by time so ``fps`` means frames analysed per second of video whatever the file's own rate.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from affectlens.errors import MediaError

logger = logging.getLogger(__name__)

MediaKind = Literal["image", "video"]
ImageInput = str | os.PathLike[str] | np.ndarray


@dataclass(frozen=True)
class MediaLimits:
    """Inputs beyond these are refused with a clear error rather than exhausting memory."""

    max_file_bytes: int = 4 * 1024**3
    max_image_pixels: int = 40_000_000
    max_video_pixels: int = 4096 * 2160
    max_duration: float = 6 * 3600.0


DEFAULT_LIMITS = MediaLimits()


@dataclass(frozen=True)
class VideoInfo:
    """Stream properties read from the container; ``fps`` and ``duration`` may be estimates."""

    width: int
    height: int
    fps: float
    duration: float | None


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB uint8 HxWx3, its index in the stream and its time in seconds."""

    index: int
    time: float
    image: np.ndarray


def _check_file(path: Path, limits: MediaLimits) -> None:
    if not path.exists():
        raise MediaError(str(path), "file not found")
    if not path.is_file():
        raise MediaError(str(path), "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(str(path), "empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise MediaError(str(path), f"file too large ({size / 1e9:.1f} GB > {limits.max_file_bytes / 1e9:.1f} GB)")


def image_from_array(array: np.ndarray, source: str = "<array>", limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Validate an array and return it as RGB uint8 HxWx3.

    Accepts HxW grey, HxWx3 RGB or HxWx4 RGBA; uint8, or floats in [0, 1].
    """
    if not isinstance(array, np.ndarray):
        raise MediaError(source, f"expected a numpy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise MediaError(source, f"unsupported array shape {array.shape}; expected HxW, HxWx3 or HxWx4")
    if array.shape[0] < 8 or array.shape[1] < 8:
        raise MediaError(source, f"image too small ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.shape[0] * array.shape[1] > limits.max_image_pixels:
        raise MediaError(source, f"image too large ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise MediaError(source, f"unsupported array dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise MediaError(source, "array contains NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    return np.ascontiguousarray(array)


def _read_image(path: Path, limits: MediaLimits) -> np.ndarray | None:
    """Decode ``path`` as an image, or return ``None`` when Pillow does not recognise it."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with Image.open(path) as img:
            if img.width * img.height > limits.max_image_pixels:
                raise MediaError(str(path), f"image too large ({img.width}x{img.height} pixels)")
            if getattr(img, "n_frames", 1) > 1:
                return None  # animated GIF/WebP: treat as video
            rgb = np.asarray(img.convert("RGB"))
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise MediaError(str(path), f"image too large (decompression bomb guard: {exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(str(path), f"corrupt or truncated image ({exc})") from exc
    return image_from_array(rgb, str(path), limits)


def load_image(image: ImageInput, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Load a path or array as RGB uint8 HxWx3."""
    if isinstance(image, np.ndarray):
        return image_from_array(image, limits=limits)
    path = Path(image)
    _check_file(path, limits)
    rgb = _read_image(path, limits)
    if rgb is None:
        raise MediaError(str(path), "not a readable image (unsupported format or not an image)")
    return rgb


def probe(path: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS) -> tuple[MediaKind, VideoInfo | None]:
    """Decide from the content, not the extension, whether ``path`` is an image or a video."""
    path = Path(path)
    _check_file(path, limits)
    if _read_image(path, limits) is not None:
        return "image", None
    return "video", video_info(path, limits)


def _open_container(path: Path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(str(path), f"not a readable image or video (unsupported format or corrupt: {exc})") from exc


def video_info(path: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Read the first video stream's properties."""
    path = Path(path)
    with _open_container(path) as container:
        if not container.streams.video:
            what = "audio only" if container.streams.audio else "no audio or video streams"
            raise MediaError(str(path), f"no video stream ({what})")
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise MediaError(str(path), "video stream has no frame size (corrupt header)")
        if width * height > limits.max_video_pixels:
            raise MediaError(str(path), f"video frames too large ({width}x{height})")
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        if duration is not None and duration > limits.max_duration:
            raise MediaError(str(path), f"video too long ({duration / 3600:.1f} h)")
        return VideoInfo(width=width, height=height, fps=fps, duration=duration)


def iter_video_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    max_frames: int | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> Iterator[Frame]:
    """Yield RGB frames, sampled at ``fps`` per second of video (every frame when ``None``).

    A stream that breaks after some frames stops with a note appended to ``warnings``; one that yields
    no frame at all raises ``MediaError``.
    """
    import av

    path = Path(path)
    info = video_info(path, limits)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = 1.0 / fps if fps else 0.0
    next_time = 0.0
    decoded = kept = 0
    with _open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else decoded / info.fps
                decoded += 1
                if step and time + 1e-6 < next_time:
                    continue
                next_time = (next_time if step else time) + step
                yield Frame(index=decoded - 1, time=time, image=frame.to_ndarray(format="rgb24"))
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        except (av.error.FFmpegError, ValueError) as exc:
            if decoded == 0:
                raise MediaError(str(path), f"corrupt or truncated video: no frame could be decoded ({exc})") from exc
            note = f"{path}: decoding stopped after {decoded} frames ({exc}); later frames are missing"
            logger.warning(note)
            if warnings is not None:
                warnings.append(note)
            return
    if decoded == 0:
        raise MediaError(str(path), "zero-length video: the stream holds no frames")

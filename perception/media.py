"""Decode images and videos into RGB uint8 arrays, with clear errors for bad input.

Images go through Pillow (with a pixel cap against decompression bombs); videos through PyAV, sampled
by time so ``fps`` means frames analysed per second of video whatever the file's own rate (variable rates
included), and turned upright as a player shows them when the container says the camera was rotated.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import os
import stat
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from affectlens.errors import MediaError

logger = logging.getLogger(__name__)

MediaKind = Literal["image", "video", "audio"]
ImageInput = str | os.PathLike[str] | np.ndarray


@dataclass(frozen=True)
class MediaLimits:
    """Inputs beyond these are refused with a clear error rather than exhausting memory."""

    max_file_bytes: int = 4 * 1024**3
    max_image_pixels: int = 40_000_000
    #: 4K (UHD 3840x2160, DCI 4096x2160, either way up) is read; 5K and 8K are refused.
    max_video_pixels: int = 4096 * 2160
    max_duration: float = 6 * 3600.0


DEFAULT_LIMITS = MediaLimits()

#: Images and video frames narrower or lower than this are refused: no face fits in them.
MIN_SIDE = 8


class AudioOnlyError(MediaError):
    """The file holds sound but no pictures: an audio file, to be analysed by the voice pipeline."""


@dataclass(frozen=True)
class VideoInfo:
    """Stream properties read from the container; ``fps`` and ``duration`` may be estimates."""

    width: int
    height: int
    fps: float
    duration: float | None
    #: How many frames the container says it holds (``None`` when it does not say).
    frames: int | None = None
    #: Degrees counterclockwise that the stream's display matrix turns the stored picture (phone videos: 90, -90,
    #: 180; PyAV's ``VideoFrame.rotation``); ``width``, ``height`` and the frames are already upright.
    rotation: int = 0


@dataclass(frozen=True)
class Frame:
    """One decoded frame: RGB uint8 HxWx3, its index in the stream and its time in seconds."""

    index: int
    time: float
    image: np.ndarray


#: What ``stat`` calls a file that is not a regular one, for the "not a regular file" message.
_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_path_type(path: object) -> None:
    """Refuse, with a ``MediaError`` rather than a ``TypeError``, an input that is neither a path nor an array."""
    if not isinstance(path, str | os.PathLike) or isinstance(os.fspath(path), bytes):
        raise MediaError("<array>", f"expected a file path or a numpy array, got {type(path).__name__}")


def _check_file(path: Path, limits: MediaLimits) -> None:
    """Make sure ``path`` names a readable, non-empty regular file, without opening it (a FIFO would block)."""
    name = str(path)
    if "\x00" in name:
        raise MediaError(name.replace("\x00", "\\x00"), "invalid path: it contains a NUL byte")
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise MediaError(name, f"broken symbolic link (its target {os.readlink(path)!r} does not exist)") from None
        raise MediaError(name, "file not found") from None
    except NotADirectoryError:
        raise MediaError(name, "file not found (a parent in the path is not a folder)") from None
    except PermissionError:
        raise MediaError(name, "permission denied") from None
    except OSError as exc:
        problem = {errno.ELOOP: "symbolic link loop", errno.ENAMETOOLONG: "file name too long"}.get(
            exc.errno or 0, f"cannot access the file ({exc.strerror or exc})"
        )
        raise MediaError(name, problem) from None
    if not stat.S_ISREG(info.st_mode):
        what = next((label for test, label in _FILE_TYPES if test(info.st_mode)), "unknown type")
        raise MediaError(name, f"not a regular file ({what})")
    if not os.access(path, os.R_OK):
        raise MediaError(name, "permission denied (the file is not readable)")
    size = info.st_size
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
    if array.shape[0] < MIN_SIDE or array.shape[1] < MIN_SIDE:
        raise MediaError(source, f"image too small ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.shape[0] * array.shape[1] > limits.max_image_pixels:
        raise MediaError(source, f"image too large ({array.shape[1]}x{array.shape[0]} pixels)")
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    ):  # complex numbers are numbers, but not pixels
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


#: Pillow's exceptions for corrupt data go beyond OSError: a broken header can raise any of these.
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError)


def _is_animation(img: object) -> bool:
    """Several frames to analyse as a video (animated GIF/WebP/PNG, multi-page TIFF).

    A camera's MPO JPEG also reports several frames, but they are views of one photo: it stays an image.
    """
    return getattr(img, "n_frames", 1) > 1 and getattr(img, "format", None) != "MPO"


def _pillow_to_array(img: object) -> np.ndarray:
    """A Pillow image as an array ``image_from_array`` understands, keeping the range of deep greyscale."""
    mode = getattr(img, "mode", "RGB")
    if mode.startswith("I;16"):  # 16-bit greyscale: convert("RGB") would clip everything above 255 to white
        return np.asarray(img).astype(np.float32) / 65535.0
    if mode == "I":  # 32-bit integers: usually 16-bit data (older Pillow, TIFF)
        values = np.asarray(img)
        top = float(values.max(initial=0))
        return values if top <= 255 else np.clip(values, 0, None).astype(np.float32) / max(top, 65535.0)
    if mode == "F":
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))  # type: ignore[attr-defined]


def _read_image(path: Path, limits: MediaLimits) -> np.ndarray | None:
    """Decode ``path`` as an image, or return ``None`` when Pillow does not recognise it."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below with a clear error
            with Image.open(path) as img:
                if img.width * img.height > limits.max_image_pixels:
                    raise MediaError(str(path), f"image too large ({img.width}x{img.height} pixels)")
                if _is_animation(img):
                    return None  # animated GIF/WebP: treat as video
                pixels = _pillow_to_array(img)
    except MediaError:
        raise
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise MediaError(str(path), f"image too large (decompression bomb guard: {exc})") from exc
    except MemoryError as exc:
        raise MediaError(str(path), "image too large (out of memory while decoding)") from exc
    except _PILLOW_ERRORS as exc:
        raise MediaError(str(path), f"corrupt or truncated image ({exc or type(exc).__name__})") from exc
    return image_from_array(pixels, str(path), limits)


def load_image(image: ImageInput, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Load a path or array as RGB uint8 HxWx3."""
    if isinstance(image, np.ndarray):
        return image_from_array(image, limits=limits)
    _check_path_type(image)
    path = Path(image)
    _check_file(path, limits)
    rgb = _read_image(path, limits)
    if rgb is None:
        raise MediaError(str(path), "not a readable image (unsupported format or not an image)")
    return rgb


def open_media(
    path: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS
) -> tuple[MediaKind, np.ndarray | None, VideoInfo | None]:
    """Decide from the content, not the extension, whether ``path`` is an image, a video or audio.

    Returns ``("image", rgb, None)`` with the image decoded once, ``("video", None, info)``, or
    ``("audio", None, None)`` for a file with sound and no pictures.
    """
    _check_path_type(path)
    path = Path(path)
    _check_file(path, limits)
    rgb = _read_image(path, limits)
    if rgb is not None:
        return "image", rgb, None
    try:
        return "video", None, video_info(path, limits)
    except AudioOnlyError:
        return "audio", None, None


def has_audio_stream(path: str | os.PathLike[str]) -> bool:
    """Whether the container at ``path`` holds a sound track (False for images and unreadable files)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return bool(container.streams.audio)
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        return False


def probe(path: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS) -> tuple[MediaKind, VideoInfo | None]:
    """The kind of ``path`` (see ``open_media``) and, for a video, its stream properties."""
    kind, _, info = open_media(path, limits)
    return kind, info


def _open_container(path: Path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise MediaError(str(path), f"not a readable image or video (unsupported format or corrupt: {exc})") from exc


def stream_duration(path: Path, container: Any, stream: Any, limits: MediaLimits, what: str) -> float | None:
    """A PyAV stream's duration in seconds (the container's when the stream has none), refused past
    ``limits.max_duration``; ``None`` when neither says."""
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    if duration is not None and duration > limits.max_duration:
        raise MediaError(str(path), f"{what} too long ({duration / 3600:.1f} h)")
    return duration


#: A display matrix's 2x2 part snapped to quarter turns and mirrors, ``(a, b, c, d)`` with entries -1, 0 or 1:
#: the stored pixel at column ``p``, row ``q`` shows at ``x = a*p + c*q``, ``y = b*p + d*q`` (FFmpeg's layout).
_Orientation = tuple[int, int, int, int]
#: Quarter turns counterclockwise (0 to 3) as orientations.
_TURNS: tuple[_Orientation, ...] = ((1, 0, 0, 1), (0, -1, 1, 0), (-1, 0, 0, -1), (0, 1, -1, 0))
_UPRIGHT = _TURNS[0]
#: Video packets ``video_info`` reads at most to find the first frame's display matrix.
_ORIENTATION_PACKETS = 64


def _orientation(frame: Any) -> _Orientation:
    """How a decoded PyAV frame is shown: its ``DISPLAYMATRIX`` side data (which FFmpeg copies onto every
    frame from the container's rotation tag), snapped to the nearest quarter turn; upright when it has none."""
    try:
        matrix = next((bytes(sd) for sd in frame.side_data if sd.type.name == "DISPLAYMATRIX"), b"")
    except ValueError:  # side data of a type this PyAV cannot name (a newer FFmpeg): read the turn alone
        return _TURNS[round(getattr(frame, "rotation", 0) / 90) % 4]
    m = np.frombuffer(matrix[: 9 * 4], dtype=np.int32)
    if len(m) < 9:
        return _UPRIGHT
    a, b, c, d = (float(v) for v in m[[0, 1, 3, 4]])
    if abs(a) + abs(d) >= abs(b) + abs(c):
        return (1 if a >= 0 else -1, 0, 0, 1 if d >= 0 else -1)
    return (0, 1 if b >= 0 else -1, 1 if c >= 0 else -1, 0)


def _orientation_degrees(orientation: _Orientation) -> int:
    """The counterclockwise turn of ``orientation`` in degrees, in [-180, 180] as PyAV's ``VideoFrame.rotation``
    gives it (a left-right mirror alone reads as -180)."""
    a, b, _, _ = orientation
    return -round(float(np.degrees(np.arctan2(b, a))))


def _upright(rgb: np.ndarray, orientation: _Orientation) -> np.ndarray:
    """``rgb`` (HxWx3 as stored) turned and mirrored the way a player shows it: FFmpeg's ``-autorotate``."""
    if orientation == _UPRIGHT:
        return rgb
    a, b, c, d = orientation
    if a == 0:  # a quarter turn: display columns follow stored rows
        rgb = rgb.transpose(1, 0, 2)
        mirror_x, mirror_y = c < 0, b < 0
    else:
        mirror_x, mirror_y = a < 0, d < 0
    if mirror_x:
        rgb = rgb[:, ::-1]
    if mirror_y:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _upright_rgb(frame: Any) -> np.ndarray:
    return _upright(frame.to_ndarray(format="rgb24"), _orientation(frame))


def _stream_orientation(container: Any, stream: Any) -> _Orientation:
    """The first frame's orientation; upright when no frame decodes within ``_ORIENTATION_PACKETS`` packets
    (``iter_video_frames`` reports broken streams)."""
    import av

    try:
        for k, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return _orientation(frame)
            if k >= _ORIENTATION_PACKETS:
                break
    except (av.error.FFmpegError, ValueError):
        pass
    return _UPRIGHT


def _ffmpeg_video_info(path: Path, limits: MediaLimits) -> VideoInfo:
    with _open_container(path) as container:
        demuxer = container.format.name
        if demuxer == "tty":  # FFmpeg plays any text file as ANSI art
            raise MediaError(str(path), "not a readable image or video (it looks like a text file)")
        if not container.streams.video:
            if container.streams.audio:
                raise AudioOnlyError(str(path), "no video stream (audio only)")
            raise MediaError(str(path), "no video stream (no audio or video streams)")
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for the codec the header names
            raise MediaError(str(path), "unsupported or corrupt video codec (no decoder for this stream)")
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            if demuxer == "image2" or demuxer.endswith("_pipe"):  # an image FFmpeg matched by name, or can't decode
                codec = stream.codec_context.name
                raise MediaError(str(path), f"not a readable image or video (unrecognised or corrupt {codec} data)")
            raise MediaError(str(path), "video stream has no frame size (corrupt header)")
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 25.0
        duration = stream_duration(path, container, stream, limits, "video")
        frames = int(stream.frames) or None
        orientation = _stream_orientation(container, stream)
        if orientation[0] == 0:  # a quarter turn: a player shows it height x width
            width, height = height, width
        rotation = _orientation_degrees(orientation)
        return VideoInfo(width, height, fps, duration, frames=frames, rotation=rotation)


def _pillow_animation_info(path: Path) -> VideoInfo | None:
    """An animation that Pillow reads but FFmpeg cannot (animated WebP), or ``None``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if not _is_animation(img):
                    return None
                frames = int(getattr(img, "n_frames", 1))
                fps = 1000.0 / img.info["duration"] if img.info.get("duration") else 10.0
                return VideoInfo(width=img.width, height=img.height, fps=fps, duration=frames / fps, frames=frames)
    except (UnidentifiedImageError, Image.DecompressionBombError, *_PILLOW_ERRORS):
        return None


def _video_source(path: Path, limits: MediaLimits) -> tuple[VideoInfo, bool]:
    """The first video stream's properties, and whether Pillow rather than FFmpeg must decode it."""
    try:
        info, with_pillow = _ffmpeg_video_info(path, limits), False
    except MediaError:
        fallback = _pillow_animation_info(path)
        if fallback is None:
            raise
        info, with_pillow = fallback, True
    if info.width * info.height > limits.max_video_pixels:
        size, cap = info.width * info.height / 1e6, limits.max_video_pixels / 1e6
        raise MediaError(
            str(path),
            f"video frames too large ({info.width}x{info.height} = {size:.1f} megapixels, "
            f"over MediaLimits.max_video_pixels = {cap:.1f})",
        )
    if info.width < MIN_SIDE or info.height < MIN_SIDE:
        raise MediaError(str(path), f"video frames too small ({info.width}x{info.height} pixels)")
    return info, with_pillow


def video_info(path: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS) -> VideoInfo:
    """Read the first video stream's properties."""
    _check_path_type(path)
    return _video_source(Path(path), limits)[0]


#: A decoded frame's time in seconds and a function that returns it as RGB (called only for sampled frames).
_RawFrame = tuple[float, Callable[[], np.ndarray]]


def _ffmpeg_frames(path: Path, info: VideoInfo) -> Generator[_RawFrame, None, None]:
    with _open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for k, frame in enumerate(container.decode(stream)):
            time = float(frame.time) if frame.time is not None else k / info.fps
            yield time, functools.partial(_upright_rgb, frame)


def _pillow_frames(path: Path, info: VideoInfo) -> Generator[_RawFrame, None, None]:
    from PIL import Image

    with Image.open(path) as img:
        time = 0.0
        for k in range(int(getattr(img, "n_frames", 1))):
            img.seek(k)
            yield time, lambda: np.asarray(img.convert("RGB"))
            time += (img.info.get("duration") or 1000.0 / info.fps) / 1000.0


def iter_video_frames(
    path: str | os.PathLike[str],
    fps: float | None = None,
    max_frames: int | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> Iterator[Frame]:
    """Yield upright RGB frames, sampled at ``fps`` per second of video (every frame when ``None``): the first
    frame at or after each multiple of ``1/fps`` seconds by its timestamp, so variable frame rates are sampled evenly.

    A stream that breaks after some frames, or ends well before the frame count its container declares,
    stops with a note appended to ``warnings``; one that yields no frame at all raises ``MediaError``.
    """
    import av

    _check_path_type(path)
    path = Path(path)
    info, with_pillow = _video_source(path, limits)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    step = 1.0 / fps if fps else 0.0
    next_time = 0.0
    decoded = kept = 0
    frames = _pillow_frames(path, info) if with_pillow else _ffmpeg_frames(path, info)
    decode_errors: tuple[type[Exception], ...] = _PILLOW_ERRORS if with_pillow else (av.error.FFmpegError, ValueError)
    with contextlib.closing(frames):
        try:
            for time, to_rgb in frames:
                decoded += 1
                if step and time + 1e-6 < next_time:
                    continue
                if step:  # the next multiple of ``step``: after a gap (variable frame rate) no burst to catch up
                    next_time = (math.floor((time + 1e-6) / step) + 1) * step
                yield Frame(index=decoded - 1, time=time, image=to_rgb())
                kept += 1
                if max_frames is not None and kept >= max_frames:
                    return
        except decode_errors as exc:
            if decoded == 0:
                raise MediaError(str(path), f"corrupt or truncated video: no frame could be decoded ({exc})") from exc
            _note(warnings, f"{path}: decoding stopped after {decoded} frames ({exc}); later frames are missing")
            return
    if decoded == 0:
        raise MediaError(str(path), "zero-length video: the stream holds no frames")
    if info.frames and info.frames - decoded > max(2, info.frames // 20):  # a frame or two may be edited out
        _note(
            warnings,
            f"{path}: only {decoded} of the {info.frames} frames the container lists could be decoded "
            "(truncated file?); later frames are missing",
        )


def _note(warnings: list[str] | None, note: str) -> None:
    logger.warning(note)
    if warnings is not None:
        warnings.append(note)

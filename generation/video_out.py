"""Write RGB frames and mono speech to an MP4 that plays everywhere: H.264 (yuv420p) video + AAC audio, via PyAV.

Choices:

- yuv420p halves the chroma resolution, so H.264 needs even widths and heights: an odd-sized frame gets one
  more row and/or column by repeating its last one (nothing of the picture is lost; the file is at most one
  pixel larger than asked).
- Frames are streamed (any iterable, e.g. a generator that renders them one by one) and the audio is
  interleaved with them as they come, so a long clip never has to sit in memory as frames.
- The audio is trimmed or padded with silence to exactly the video's length (``frames / fps``), resampled by
  PyAV's ``AudioResampler`` to a rate AAC supports when its own is not one.
- The MP4 is written to a hidden temporary file beside ``path`` and renamed over it at the end: an error never
  leaves a half-written MP4 behind.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final, cast

import av
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

from affectlens.errors import AffectLensError

logger = logging.getLogger(__name__)

VIDEO_ENCODERS: Final[tuple[str, ...]] = ("libx264", "h264", "libopenh264")
AUDIO_ENCODERS: Final[tuple[str, ...]] = ("aac", "libfdk_aac")
#: Sample rates the AAC encoder accepts; audio at another rate is resampled to ``FALLBACK_AUDIO_RATE``.
AAC_RATES: Final[frozenset[int]] = frozenset(
    {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}
)
FALLBACK_AUDIO_RATE: Final[int] = 48000
AAC_FRAME: Final[int] = 1024  # samples per AAC frame
AUDIO_BITRATE: Final[int] = 128_000


def _encoder(names: tuple[str, ...], kind: str) -> str:
    for name in names:
        try:
            av.codec.Codec(name, "w")
        except (av.error.FFmpegError, ValueError):  # PyAV raises UnknownCodecError, a ValueError, for unknown names
            continue
        return name
    raise AffectLensError(
        f"no {kind} encoder in this PyAV build (tried {', '.join(names)}); install the PyPI `av` wheel, which "
        "bundles libx264 and AAC"
    )


def _even_frame(frame: object, index: int, size: tuple[int, int] | None) -> np.ndarray:
    """Check one frame (RGB uint8 HxWx3, same size as the first) and pad it to even sides."""
    if not isinstance(frame, np.ndarray):
        raise AffectLensError(f"frame {index} is a {type(frame).__name__}, not a numpy array")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise AffectLensError(f"frame {index} must be RGB uint8 HxWx3, got shape {frame.shape} ({frame.dtype})")
    if size is not None and frame.shape[:2] != size:
        raise AffectLensError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, frame 0 is {size[1]}x{size[0]}")
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


def _audio_samples(audio: np.ndarray, sample_rate: int, out_rate: int) -> np.ndarray:
    """Mono audio -> float32 at ``out_rate`` (PyAV's resampler when the rates differ), clipped to [-1, 1]."""
    data = np.asarray(audio)
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.number):
        raise AffectLensError(f"audio must be 1-D mono samples, got an array of shape {data.shape} ({data.dtype})")
    if np.issubdtype(data.dtype, np.integer):
        data = data / float(np.iinfo(data.dtype).max)
    data = np.clip(np.nan_to_num(data.astype(np.float32)), -1.0, 1.0)
    if out_rate == sample_rate or data.size == 0:
        return data
    frame = av.AudioFrame.from_ndarray(data[None, :], format="fltp", layout="mono")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=out_rate)
    parts = [f.to_ndarray()[0] for f in (*resampler.resample(frame), *resampler.resample(None))]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


class _AudioFeed:
    """Encodes the audio in AAC-sized chunks up to a given sample count, padding with silence past its end."""

    def __init__(self, container: OutputContainer, stream: AudioStream, samples: np.ndarray, rate: int) -> None:
        self.container, self.stream, self.samples, self.rate = container, stream, samples, rate
        self.sent = 0

    def _send(self, count: int) -> None:
        chunk = self.samples[self.sent : self.sent + count]
        if len(chunk) < count:
            chunk = np.concatenate([chunk, np.zeros(count - len(chunk), np.float32)])
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.sent
        frame.time_base = Fraction(1, self.rate)
        self.container.mux(self.stream.encode(frame))
        self.sent += count

    def until(self, seconds: float | Fraction) -> None:
        """Send whole AAC frames up to ``seconds``."""
        while self.sent + AAC_FRAME <= round(seconds * self.rate):
            self._send(AAC_FRAME)

    def finish(self, seconds: float) -> None:
        """Send the rest up to exactly ``seconds`` (a short last frame) and flush the encoder."""
        self.until(seconds)
        rest = round(seconds * self.rate) - self.sent
        if rest > 0:
            self._send(rest)
        self.container.mux(self.stream.encode(None))


def write_mp4(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 20,
) -> Path:
    """Encode ``frames`` (RGB uint8 HxWx3, all the same size) at ``fps`` and optional mono ``audio`` (float in
    [-1, 1] or integer PCM, at ``sample_rate`` Hz) into the MP4 ``path``; returns ``path``.

    ``crf``: libx264 quality (0 lossless ... 51 worst; 18-23 is visually good).

    Raises:
        AffectLensError: no frames, frames of different sizes or not RGB uint8, bad fps/crf/audio, a directory
            that does not exist or cannot be written, missing encoders, or the encoder failing.
    """
    target = Path(path)
    if not fps > 0 or not np.isfinite(fps):
        raise AffectLensError(f"fps must be a positive number, got {fps}")
    if not 0 <= crf <= 51:
        raise AffectLensError(f"crf must lie in 0-51, got {crf}")
    if audio is not None and (sample_rate is None or sample_rate <= 0):
        raise AffectLensError(f"audio needs a positive sample_rate, got {sample_rate}")
    folder = target.parent
    if not folder.is_dir():
        raise AffectLensError(f"{target}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise AffectLensError(f"{target}: the directory {folder} is not writable")
    video_codec = _encoder(VIDEO_ENCODERS, "H.264")
    audio_codec = _encoder(AUDIO_ENCODERS, "AAC") if audio is not None else None

    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise AffectLensError(f"{target}: no frames to write")
    first_frame = _even_frame(first, 0, None)
    size: tuple[int, int] = first.shape[:2]
    samples = np.zeros(0, np.float32)
    out_rate = 0
    if audio is not None and sample_rate is not None:
        out_rate = sample_rate if sample_rate in AAC_RATES else FALLBACK_AUDIO_RATE
        samples = _audio_samples(audio, sample_rate, out_rate)

    # A hidden name beside the target (same filesystem, so the final rename is atomic); PyAV creates it with the
    # usual permissions.
    tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            options = {"crf": str(crf)} if video_codec in {"libx264", "h264"} else {}
            video = cast(VideoStream, container.add_stream(video_codec, rate=rate, options=options))
            video.width, video.height = first_frame.shape[1], first_frame.shape[0]
            video.pix_fmt = "yuv420p"
            feed = None
            if audio_codec is not None:
                stream = cast(AudioStream, container.add_stream(audio_codec, rate=out_rate, layout="mono"))
                stream.bit_rate = AUDIO_BITRATE
                feed = _AudioFeed(container, stream, samples, out_rate)
            frame: np.ndarray | None = first_frame
            while frame is not None:
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                picture.pts = count
                picture.time_base = 1 / rate
                container.mux(video.encode(picture))
                count += 1
                if feed is not None:
                    feed.until(count / rate)
                nxt = next(iterator, None)
                frame = None if nxt is None else _even_frame(nxt, count, size)
            container.mux(video.encode(None))
            if feed is not None:
                feed.finish(float(count / rate))
        os.replace(tmp, target)
    except (av.error.FFmpegError, OSError) as exc:
        raise AffectLensError(f"{target}: encoding failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "wrote %s: %d frames %dx%d at %s fps%s",
        target,
        count,
        first_frame.shape[1],
        first_frame.shape[0],
        rate,
        f", {len(samples) / out_rate:.2f} s of audio at {out_rate} Hz" if audio is not None else "",
    )
    return target


@dataclass(frozen=True)
class Mp4Info:
    """What an MP4 holds: codecs, size, frame count, rates and durations (seconds)."""

    video_codec: str
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_duration: float | None


def read_mp4_info(path: str | os.PathLike[str]) -> Mp4Info:
    """Codecs, frame count (decoded, not the header's claim), fps and durations of a video file.

    Raises:
        AffectLensError: the file is missing, unreadable or has no video stream.
    """
    source = Path(path)
    if not source.is_file():
        raise AffectLensError(f"{source}: no such file")
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise AffectLensError(f"{source}: no video stream")
            video = container.streams.video[0]
            frames = sum(1 for _ in container.decode(video=0))
            fps = float(video.average_rate or video.base_rate or 0)
            duration = frames / fps if fps else 0.0
            audio = container.streams.audio[0] if container.streams.audio else None
            audio_duration = None
            if audio is not None and audio.duration is not None and audio.time_base is not None:
                audio_duration = float(audio.duration * audio.time_base)
            return Mp4Info(
                video_codec=video.codec_context.name,
                width=video.width,
                height=video.height,
                fps=fps,
                frames=frames,
                duration=duration,
                audio_codec=audio.codec_context.name if audio is not None else None,
                audio_sample_rate=audio.sample_rate if audio is not None else None,
                audio_duration=audio_duration,
            )
    except av.error.FFmpegError as exc:
        raise AffectLensError(f"{source}: unreadable video: {exc}") from exc

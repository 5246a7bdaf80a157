"""Decode any audio file, or a video's sound track, into 16 kHz mono float32 in [-1, 1], streamed in chunks.

PyAV decodes and ``av.AudioResampler`` down-mixes and resamples, so an hour of audio is read in bounded
memory (``iter_audio_chunks``); ``load_audio`` gathers a short clip into one array. Bad input raises
``MediaError`` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from affectlens.errors import MediaError
from perception.media import (
    DEFAULT_LIMITS,
    MediaLimits,
    _check_file,
    _check_path_type,
    _open_container,
    stream_duration,
)

logger = logging.getLogger(__name__)

#: The one sample rate every voice component works at (Hz).
SAMPLE_RATE = 16_000

AudioPath = str | os.PathLike[str]


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream's properties as the container states them.

    ``duration`` in seconds (``None`` when the container does not say), ``sample_rate`` in Hz and
    ``channels`` of the stream as stored, before any resampling.
    """

    duration: float | None
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class AudioChunk:
    """Consecutive 16 kHz mono float32 samples in [-1, 1], shape ``(n,)``, starting at ``start`` seconds."""

    start: float
    samples: np.ndarray

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / SAMPLE_RATE


def _open_audio(path: Path) -> Any:
    """Open ``path`` with PyAV, with audio-worded errors for what ``media._open_container`` refuses."""
    try:
        container = _open_container(path)
    except MediaError as exc:
        raise MediaError(str(path), "not a readable audio or video file (unsupported format or corrupt)") from exc
    if container.format.name == "tty":  # FFmpeg plays any text file as ANSI art
        container.close()
        raise MediaError(str(path), "not a readable audio or video file (it looks like a text file)")
    if not container.streams.audio:
        demuxer = container.format.name
        has_video = bool(container.streams.video)
        container.close()
        if not has_video:
            raise MediaError(
                str(path), "not a readable audio file (no audio stream found: unsupported format or corrupt)"
            )
        what = "an image" if demuxer == "image2" or demuxer.endswith("_pipe") else "a video without sound"
        raise MediaError(str(path), f"no audio stream ({what})")
    return container


def _stream_info(path: Path, stream: Any, container: Any, limits: MediaLimits) -> AudioInfo:
    codec = stream.codec_context
    if codec is None:  # FFmpeg has no decoder for the codec the header names
        raise MediaError(str(path), "unsupported or corrupt audio codec (no decoder for this stream)")
    rate = int(codec.sample_rate or stream.rate or 0)
    channels = int(codec.channels or 0)
    if rate <= 0:
        raise MediaError(str(path), "audio stream has no sample rate (corrupt header)")
    duration = stream_duration(path, container, stream, limits, "audio")
    return AudioInfo(duration=duration, sample_rate=rate, channels=channels)


def _prepare(path: AudioPath, limits: MediaLimits) -> Path:
    _check_path_type(path)
    resolved = Path(path)
    _check_file(resolved, limits)
    return resolved


def audio_info(path: AudioPath, limits: MediaLimits = DEFAULT_LIMITS) -> AudioInfo:
    """Read the first audio stream's properties without decoding it.

    Raises:
        MediaError: the file is missing, empty, not audio or video, corrupt, or has no audio stream.
    """
    resolved = _prepare(path, limits)
    with _open_audio(resolved) as container:
        return _stream_info(resolved, container.streams.audio[0], container, limits)


def iter_audio_chunks(
    path: AudioPath,
    chunk_seconds: float = 30.0,
    limits: MediaLimits = DEFAULT_LIMITS,
    warnings: list[str] | None = None,
) -> Generator[AudioChunk, None, None]:
    """Yield the first audio stream as 16 kHz mono float32 chunks of ``chunk_seconds`` (the last may be shorter).

    Memory stays bounded by one chunk plus one decoded frame whatever the file's length. Chunks are
    contiguous: each starts where the previous one ended; the first starts at the stream's first
    timestamp (0 for most files). Channels are averaged by the resampler; values are clipped to [-1, 1].
    A stream that breaks after some audio stops with a note appended to ``warnings``.

    Raises:
        MediaError: bad file (see ``audio_info``), no audio could be decoded, or the stream is zero-length.
        ValueError: ``chunk_seconds`` is not positive.
    """
    import av

    if not chunk_seconds > 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    resolved = _prepare(path, limits)
    chunk_len = max(1, round(chunk_seconds * SAMPLE_RATE))
    with _open_audio(resolved) as container:
        stream = container.streams.audio[0]
        _stream_info(resolved, stream, container, limits)
        # Planar float at 16 kHz in the source layout; channels are averaged here (FFmpeg's own down-mix
        # scales stereo by 0.707 per channel, which would clip loud in-phase stereo).
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_len = 0
        emitted = 0
        offset: float | None = None
        decoded_frames = 0

        def take(n: int) -> np.ndarray:
            nonlocal pending, pending_len
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            head, rest = joined[:n], joined[n:]
            pending = [rest] if len(rest) else []
            pending_len = len(rest)
            return np.clip(head, -1.0, 1.0)

        def emit(samples: np.ndarray) -> AudioChunk:
            nonlocal emitted
            chunk = AudioChunk(start=(offset or 0.0) + emitted / SAMPLE_RATE, samples=samples)
            emitted += len(samples)
            return chunk

        decode_errors = (av.error.FFmpegError, ValueError)
        frames = container.decode(stream)
        with contextlib.closing(frames):
            while True:
                try:
                    frame = next(frames, None)
                    out = resampler.resample(frame)
                except decode_errors as exc:
                    if decoded_frames == 0:
                        raise MediaError(
                            str(resolved), f"corrupt or truncated audio: nothing could be decoded ({exc})"
                        ) from exc
                    decoded = (emitted + pending_len) / SAMPLE_RATE
                    _note(warnings, f"{resolved}: decoding stopped after {decoded:.2f} s ({exc}); the rest is missing")
                    out = resampler.resample(None)
                    frame = None
                if frame is not None:
                    decoded_frames += 1
                    if offset is None:
                        offset = max(0.0, float(frame.time)) if frame.time is not None else 0.0
                for resampled in out:
                    planes = resampled.to_ndarray()
                    samples = (planes.mean(axis=0) if planes.shape[0] > 1 else planes[0]).astype(np.float32, copy=False)
                    if len(samples):
                        pending.append(samples)
                        pending_len += len(samples)
                while pending_len >= chunk_len:
                    yield emit(take(chunk_len))
                if frame is None:
                    break
        if pending_len:
            yield emit(take(pending_len))
    if emitted == 0:
        raise MediaError(str(resolved), "zero-length audio: the stream holds no samples")


def load_audio(path: AudioPath, max_seconds: float | None = None, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The whole audio stream (or its first ``max_seconds``) as 16 kHz mono float32 in [-1, 1], shape ``(n,)``.

    For short clips; use ``iter_audio_chunks`` for long recordings.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    limit = None if max_seconds is None else round(max_seconds * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    total = 0
    chunks = iter_audio_chunks(path, chunk_seconds=min(max_seconds or 30.0, 30.0), limits=limits)
    with contextlib.closing(chunks):
        for chunk in chunks:
            parts.append(chunk.samples)
            total += len(chunk.samples)
            if limit is not None and total >= limit:
                break
    audio = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return audio[:limit] if limit is not None else audio


def _note(warnings: list[str] | None, note: str) -> None:
    logger.warning(note)
    if warnings is not None:
        warnings.append(note)

"""Audio in: any audio file or a video's sound track as 16 kHz mono float32, streamed, with clear errors."""

from __future__ import annotations

import os
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from affectlens.errors import MediaError
from perception.audio import SAMPLE_RATE, AudioInfo, audio_info, iter_audio_chunks, load_audio


def write_audio(path: Path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """Write ``samples`` (channels x n, float in [-1, 1]) with PyAV; mono for one row, stereo for two."""
    samples = np.atleast_2d(np.asarray(samples, np.float32))
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.format.name
        step = 4096 if codec.startswith("pcm") else (stream.codec_context.frame_size or 1152)
        for i in range(0, samples.shape[1], step):
            block = samples[:, i : i + step]
            if fmt == "s16":
                data = (np.clip(block, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            elif fmt == "s16p":
                data = (np.clip(block, -1, 1) * 32767).astype(np.int16)
            elif fmt == "fltp":
                data = np.ascontiguousarray(block)
            else:
                raise AssertionError(f"test helper cannot write {fmt}")
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate = rate
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_video(path: Path, audio: np.ndarray | None, seconds: float = 2.0) -> Path:
    """A 64x64 H.264 MP4, with a stereo 44.1 kHz AAC track when ``audio`` (2 x n) is given."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=44100) if audio is not None else None
        if sound is not None:
            sound.layout = "stereo"
        for i in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 10 % 255, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None and audio is not None:
            for i in range(0, audio.shape[1], 1024):
                block = np.ascontiguousarray(audio[:, i : i + 1024], np.float32)
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 44100, i
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)
    return path


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(audio: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


def test_mono_16k_wav_round_trips(tmp_path: Path) -> None:
    x = tone(300, 1.5, SAMPLE_RATE)
    path = write_audio(tmp_path / "a.wav", x, SAMPLE_RATE)
    assert audio_info(path) == AudioInfo(duration=1.5, sample_rate=SAMPLE_RATE, channels=1)
    y = load_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() < 1e-3  # int16 quantisation only


def test_stereo_44k1_is_resampled_and_channels_averaged(tmp_path: Path) -> None:
    x = tone(440, 2.0, 44100, amplitude=0.8)
    same = write_audio(tmp_path / "same.wav", np.stack([x, x]), 44100)
    info = audio_info(same)
    assert (info.sample_rate, info.channels) == (44100, 2) and info.duration == pytest.approx(2.0)
    y = load_audio(same)
    assert abs(len(y) - 2 * SAMPLE_RATE) <= 16
    assert peak_frequency(y) == pytest.approx(440, abs=2)
    assert np.abs(y[1000:-1000]).max() == pytest.approx(0.8, abs=0.02)  # averaged, not FFmpeg's 0.707 down-mix
    opposite = load_audio(write_audio(tmp_path / "opposite.wav", np.stack([x, -x]), 44100))
    assert np.abs(opposite).max() < 1e-3  # (L + R) / 2 cancels


def test_8k_telephone_audio_is_upsampled(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "phone.wav", tone(1000, 1.0, 8000), 8000)
    y = load_audio(path)
    assert abs(len(y) - SAMPLE_RATE) <= 16
    assert peak_frequency(y) == pytest.approx(1000, abs=2)
    assert np.abs(y[SAMPLE_RATE // 2 :]).max() < 0.55  # no energy above the 4 kHz band invented


def test_clipped_input_stays_in_range(tmp_path: Path) -> None:
    square = np.sign(tone(200, 1.0, 22050)) * 1.0
    y = load_audio(write_audio(tmp_path / "clip.flac", square, 22050, codec="flac"))
    assert y.min() >= -1.0 and y.max() <= 1.0
    assert np.abs(y).max() > 0.95


def test_chunks_are_contiguous_and_equal_the_whole(tmp_path: Path) -> None:
    x = tone(250, 3.5, SAMPLE_RATE)
    path = write_audio(tmp_path / "c.flac", x, SAMPLE_RATE, codec="flac")
    chunks = list(iter_audio_chunks(path, chunk_seconds=1.0))
    assert [len(c.samples) for c in chunks] == [16000, 16000, 16000, 8000]
    assert [c.start for c in chunks] == [0.0, 1.0, 2.0, 3.0]
    assert chunks[-1].end == pytest.approx(3.5)
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), load_audio(path))
    assert len(load_audio(path, max_seconds=0.25)) == 4000


def test_long_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    minutes = 10
    rng = np.random.default_rng(0)
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:  # written in blocks so the test itself stays small
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        for _ in range(minutes * 6):
            out.writeframes((rng.normal(0, 3000, 10 * SAMPLE_RATE)).astype(np.int16).tobytes())
    whole_bytes = minutes * 60 * SAMPLE_RATE * 4  # 38 MB as float32
    tracemalloc.start()
    total = 0
    try:
        for chunk in iter_audio_chunks(path, chunk_seconds=30.0):
            total += len(chunk.samples)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == minutes * 60 * SAMPLE_RATE
    assert peak < whole_bytes / 4, f"peak {peak / 1e6:.1f} MB"


def test_video_sound_track_is_read(tmp_path: Path) -> None:
    x = tone(440, 2.0, 44100)
    path = write_video(tmp_path / "talk.mp4", np.stack([x, x]))
    info = audio_info(path)
    assert (info.sample_rate, info.channels) == (44100, 2)
    y = load_audio(path)
    assert abs(len(y) / SAMPLE_RATE - 2.0) < 0.05  # AAC adds a few ms of priming
    assert peak_frequency(y) == pytest.approx(440, abs=2)


def test_video_without_sound_has_no_audio_stream(tmp_path: Path) -> None:
    path = write_video(tmp_path / "mute.mp4", None)
    with pytest.raises(MediaError, match="no audio stream \\(a video without sound\\)"):
        load_audio(path)


def test_image_has_no_audio_stream(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "still.png"
    Image.new("RGB", (32, 32), (200, 10, 10)).save(path)
    with pytest.raises(MediaError, match="no audio stream \\(an image\\)"):
        audio_info(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "zero.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"")
    assert path.stat().st_size > 0
    with pytest.raises(MediaError, match="zero-length audio"):
        load_audio(path)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(os.urandom(4096)), "not a readable audio"),
        (lambda p: p.write_text("just some words\n" * 50), "not a readable audio"),
        (lambda p: p.mkdir(), "not a regular file"),
    ],
    ids=["missing", "empty", "random-bytes", "text", "directory"],
)
def test_bad_files_raise_media_error(tmp_path: Path, make, problem: str) -> None:
    path = tmp_path / "input.wav"
    make(path)
    with pytest.raises(MediaError, match=problem) as caught:
        list(iter_audio_chunks(path))
    assert caught.value.source == str(path)


def test_truncated_file_is_corrupt_or_short(tmp_path: Path) -> None:
    noisy = np.random.default_rng(0).uniform(-0.5, 0.5, 4 * SAMPLE_RATE)  # barely compressible
    path = write_audio(tmp_path / "t.flac", noisy, SAMPLE_RATE, codec="flac")
    data = path.read_bytes()
    broken = tmp_path / "broken.flac"
    broken.write_bytes(data[:200])  # the start of the header and nothing of the stream
    with pytest.raises(MediaError, match="not a readable audio"):
        load_audio(broken)
    half = tmp_path / "half.flac"
    half.write_bytes(data[: len(data) // 2])
    notes: list[str] = []
    y = np.concatenate([c.samples for c in iter_audio_chunks(half, warnings=notes)])
    assert 1.0 * SAMPLE_RATE < len(y) < 3.0 * SAMPLE_RATE  # what could be decoded, not an error
    assert notes and "decoding stopped after" in notes[0]


def test_not_a_path_is_refused() -> None:
    with pytest.raises(MediaError, match="expected a file path"):
        load_audio(12345)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_seconds"):
        next(iter_audio_chunks("x.wav", chunk_seconds=0))

"""Lip sync from audio (synthetic bursts and real speech) and the MP4 writer (streams, lengths, bad input)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from affectlens.errors import AffectLensError
from generation import lipsync, speech, video_out
from generation.lipsync import envelope_correlation, mouth_curves
from generation.video_out import read_mp4_info, write_mp4

SR = 16000
FPS = 25.0


def _burst(freqs: tuple[float, ...], seconds: float = 0.4, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return level * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)


def _silence(seconds: float = 0.4) -> np.ndarray:
    return np.zeros(int(seconds * SR))


def _frame_slice(start_s: float, end_s: float) -> slice:
    """Frames well inside [start_s, end_s): skip 2 frames at each edge (smoothing and lead)."""
    return slice(round(start_s * FPS) + 2, round(end_s * FPS) - 2)


# ---- lip sync ----------------------------------------------------------------------------------------------


def test_mouth_opens_in_bursts_and_closes_in_silence() -> None:
    low, high = (250.0, 600.0, 900.0), (250.0, 2200.0, 3000.0)
    signal = np.concatenate([_silence(), _burst(low), _silence(), _burst(high), _silence()])
    curves = mouth_curves(signal, SR, FPS)
    assert len(curves) == len(curves.spread) == len(curves.envelope) == round(len(signal) / SR * FPS)
    assert curves.open.dtype == np.float32 and curves.fps == FPS
    burst1, burst2 = _frame_slice(0.4, 0.8), _frame_slice(1.2, 1.6)
    gap, start = _frame_slice(0.8, 1.2), slice(0, 8)
    assert curves.open[burst1].min() > 0.8 and curves.open[burst2].min() > 0.8
    assert curves.open[start].max() < 0.05
    assert curves.open[_frame_slice(0.8, 1.2)][3:].max() < 0.1  # closed once the release has run
    assert curves.open[gap].mean() < 0.2
    assert envelope_correlation(curves.open, curves.envelope) > 0.8
    assert curves.spread[burst2].mean() > 0.3 > -0.3 > curves.spread[burst1].mean()
    assert np.all(curves.spread[start] == 0)
    assert np.all((curves.open >= 0) & (curves.open <= 1)) and np.all(np.abs(curves.spread) <= 1)


def test_opening_does_not_depend_on_the_recording_level() -> None:
    signal = np.concatenate([_silence(), _burst((300.0,), level=0.5), _burst((300.0,), level=0.05), _silence()])
    loud = mouth_curves(signal, SR, FPS)
    quiet = mouth_curves(signal * 0.01, SR, FPS)
    np.testing.assert_allclose(loud.open, quiet.open, atol=1e-4)
    inner = _frame_slice(0.8, 1.2)
    assert 0.1 < loud.open[inner].mean() < 0.8  # a burst 20 dB down opens the mouth partway


def test_the_mouth_leads_the_sound_by_one_frame() -> None:
    signal = np.concatenate([_silence(0.4), _burst((300.0,), 0.4)])
    curves = mouth_curves(signal, SR, FPS)
    first_open = int(np.argmax(curves.open > 0.3))
    assert first_open == round(0.4 * FPS) - 1  # the sound starts at frame 10; the mouth at frame 9


def test_frame_count_and_validation() -> None:
    curves = mouth_curves(_burst((300.0,), 1.0), SR, 30.0, num_frames=50)
    assert len(curves) == 50 and curves.open[40:].max() < 0.2  # frames past the audio see silence
    assert np.all(mouth_curves(_silence(), SR).open == 0)
    with pytest.raises(AffectLensError, match="1-D"):
        mouth_curves(np.zeros((100, 2)), SR)
    with pytest.raises(AffectLensError, match="NaN"):
        mouth_curves(np.array([0.0, np.nan, 0.1]), SR)
    with pytest.raises(AffectLensError, match="positive"):
        mouth_curves(np.zeros(100), 0)


def test_envelope_correlation_is_nan_safe() -> None:
    a = np.array([0.0, 1.0, 2.0, np.nan, 4.0])
    assert envelope_correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert envelope_correlation(a, -a) == pytest.approx(-1.0)
    assert envelope_correlation(np.ones(5), a) == 0.0
    with pytest.raises(AffectLensError):
        envelope_correlation(np.ones(3), np.ones(4))


def test_real_speech_follows_its_envelope_quickly() -> None:
    if speech.find_espeak() is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    spoken = speech.synthesize("Hello there, how are you? I am fine, thank you very much.", engine="espeak-ng")
    curves = mouth_curves(spoken.samples, spoken.sample_rate)
    assert envelope_correlation(curves.open, curves.envelope) > 0.5
    assert curves.open.max() > 0.9 and curves.open.min() < 0.1
    ten_seconds = np.resize(spoken.samples, 10 * spoken.sample_rate)
    start = time.perf_counter()
    lipsync.mouth_curves(ten_seconds, spoken.sample_rate)
    assert time.perf_counter() - start < 0.1


# ---- MP4 writer --------------------------------------------------------------------------------------------


def _frames(n: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    return [np.full((height, width, 3), (8 * i) % 256, np.uint8) for i in range(n)]


def test_mp4_has_h264_and_aac_of_the_right_length(tmp_path: Path) -> None:
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(1.2 * 22050)) / 22050)).astype(np.float32)
    path = write_mp4(tmp_path / "clip.mp4", iter(_frames(30)), 25, tone, 22050)
    info = read_mp4_info(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.frames == 30 and info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.2, abs=0.05)
    assert info.audio_duration == pytest.approx(1.2, abs=0.1) and info.audio_sample_rate == 22050
    assert (info.width, info.height) == (64, 48)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_audio_is_padded_or_trimmed_to_the_video_and_resampled(tmp_path: Path) -> None:
    short = write_mp4(tmp_path / "short.mp4", _frames(25), 25, np.full(1000, 0.1, np.float32), 16001)
    info = read_mp4_info(short)
    assert info.audio_sample_rate == video_out.FALLBACK_AUDIO_RATE  # 16001 Hz is no AAC rate: resampled
    assert info.audio_duration == pytest.approx(1.0, abs=0.1)
    long = write_mp4(tmp_path / "long.mp4", _frames(10), 25, np.zeros(5 * 16000, np.int16), 16000)
    assert read_mp4_info(long).audio_duration == pytest.approx(0.4, abs=0.1)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    info = read_mp4_info(write_mp4(tmp_path / "odd.mp4", _frames(5, 47, 63), 10))
    assert (info.width, info.height) == (64, 48) and info.frames == 5 and info.audio_codec is None


@pytest.mark.parametrize(
    ("frames", "problem"),
    [
        ([], "no frames"),
        ([np.zeros((8, 8, 3), np.float32)], "RGB uint8"),
        ([np.zeros((8, 8), np.uint8)], "RGB uint8"),
        ([np.zeros((8, 8, 4), np.uint8)], "RGB uint8"),
        (["not a frame"], "not a numpy array"),
    ],
)
def test_bad_frames_are_refused(tmp_path: Path, frames: list[object], problem: str) -> None:
    with pytest.raises(AffectLensError, match=problem):
        write_mp4(tmp_path / "bad.mp4", frames, 25)  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_errors_midway_leave_no_file_behind(tmp_path: Path) -> None:
    # 60 frames first: PyAV creates the file only once the encoders emit packets (x264 looks 40 frames ahead).
    mixed = [*_frames(60), np.zeros((50, 64, 3), np.uint8)]
    with pytest.raises(AffectLensError, match="frame 60 is 64x50, frame 0 is 64x48"):
        write_mp4(tmp_path / "mixed.mp4", mixed, 25, np.zeros(5 * 16000, np.float32), 16000)
    assert os.listdir(tmp_path) == []

    def renderer() -> Iterator[np.ndarray]:
        yield from _frames(60)
        raise RuntimeError("renderer crashed")

    (tmp_path / "keep.mp4").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_mp4(tmp_path / "keep.mp4", renderer(), 25)
    assert os.listdir(tmp_path) == ["keep.mp4"] and (tmp_path / "keep.mp4").read_bytes() == b"old"


def test_bad_arguments_and_places_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames(2)
    with pytest.raises(AffectLensError, match="does not exist"):
        write_mp4(tmp_path / "missing" / "x.mp4", frames, 25)
    (tmp_path / "file").write_text("")
    with pytest.raises(AffectLensError, match="does not exist"):
        write_mp4(tmp_path / "file" / "x.mp4", frames, 25)
    with pytest.raises(AffectLensError, match="fps"):
        write_mp4(tmp_path / "x.mp4", frames, 0)
    with pytest.raises(AffectLensError, match="sample_rate"):
        write_mp4(tmp_path / "x.mp4", frames, 25, np.zeros(10, np.float32))
    with pytest.raises(AffectLensError, match="1-D mono"):
        write_mp4(tmp_path / "x.mp4", frames, 25, np.zeros((10, 2), np.float32), 16000)
    with pytest.raises(AffectLensError, match="crf"):
        write_mp4(tmp_path / "x.mp4", frames, 25, crf=60)
    monkeypatch.setattr(video_out, "VIDEO_ENCODERS", ("no-such-encoder",))
    with pytest.raises(AffectLensError, match=r"no H\.264 encoder"):
        write_mp4(tmp_path / "x.mp4", frames, 25)
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_an_unwritable_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root may write anywhere: let the check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    try:
        with pytest.raises(AffectLensError, match="not writable"):
            write_mp4(folder / "x.mp4", _frames(2), 25)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)

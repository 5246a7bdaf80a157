"""Videos as phones and cameras write them: rotation metadata, variable frame rate, 4K (and 8K refused).

Every video is generated here with PyAV: tiny, but for 4 frames of 3840x2160 (~30 kB of H.264) and one 8K frame.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from affectlens import load_annotations
from affectlens.annotate import ERRORS, AnnotateSettings, annotate_files
from perception.media import _orientation, _upright, iter_video_frames, probe
from tests.test_annotate import tiny_analyzer

#: The stored picture of the rotation tests: 160x120 grey with a white 40x40 square in its top-left corner.
STORED_W, STORED_H, SQUARE = 160, 120, 40
SETTINGS = AnnotateSettings(fps=5.0, modalities=("face",), format="csv", report=False)


def _write(
    path: Path,
    images: list[np.ndarray],
    times_ms: list[int] | None = None,
    rotation: float | None = None,
    codec: str = "libx264",
    rate: int = 10,
) -> Path:
    """An MP4 of ``images``; ``times_ms`` sets each frame's timestamp (variable frame rate), ``rotation`` writes a
    display matrix turning the picture that many degrees counterclockwise (PyAV ``set_display_rotation``)."""
    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        options = {"preset": "ultrafast", "g": str(len(images))} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if times_ms is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = times_ms[k], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _stored_picture() -> np.ndarray:
    image = np.full((STORED_H, STORED_W, 3), 90, np.uint8)
    image[:SQUARE, :SQUARE] = 255
    return image


def _square_corner(image: np.ndarray) -> str:
    """Which corner of ``image`` holds the white square."""
    h, w = image.shape[0] // 4, image.shape[1] // 4
    grey = image[..., 0].astype(float)
    corners = {
        "top-left": grey[:h, :w], "top-right": grey[:h, -w:], "bottom-left": grey[-h:, :w], "bottom-right": grey[-h:, -w:]
    }  # fmt: skip
    return max(corners, key=lambda name: corners[name].mean())


# --------------------------------------------------------------------------------------------------
# Rotation metadata


@pytest.mark.parametrize(
    ("ccw", "corner"),
    [
        (-90, "top-right"),  # a phone's "rotate=90" tag: shown turned a quarter clockwise
        (90, "bottom-left"),  # a quarter counterclockwise
        (180, "bottom-right"),  # upside down
        (0, "top-left"),  # an identity matrix changes nothing
    ],
)
def test_rotated_video_decodes_upright(tmp_path: Path, ccw: int, corner: str) -> None:
    path = _write(tmp_path / f"rot{ccw}.mp4", [_stored_picture()] * 3, rotation=ccw)
    kind, info = probe(path)
    quarter = ccw % 180 != 0
    assert kind == "video" and info is not None
    assert (info.width, info.height) == ((STORED_H, STORED_W) if quarter else (STORED_W, STORED_H))
    assert info.rotation % 360 == ccw % 360
    frames = list(iter_video_frames(path))
    assert len(frames) == 3
    for frame in frames:
        assert frame.image.shape == (info.height, info.width, 3) and frame.image.flags.c_contiguous
        assert _square_corner(frame.image) == corner
    # OpenCV's FFmpeg reader, which turns frames by the same display matrix on its own, agrees.
    capture = cv2.VideoCapture(str(path))
    ok, bgr = capture.read()
    capture.release()
    assert ok and bgr.shape == frames[0].image.shape and _square_corner(bgr[..., ::-1]) == corner


@pytest.mark.parametrize(
    ("hflip", "corner"),
    [(False, "bottom-left"), (True, "bottom-right")],  # turned a quarter counterclockwise, then mirrored
)
def test_mirrored_display_matrix_is_mirrored(tmp_path: Path, hflip: bool, corner: str) -> None:
    """A display matrix may also mirror (``ffmpeg -autorotate`` applies it; OpenCV only turns)."""
    path = tmp_path / "mirror.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = STORED_W, STORED_H, "yuv420p"
        stream.set_display_rotation(90, hflip=hflip)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(_stored_picture(), format="rgb24")), *stream.encode()]:
            container.mux(packet)
    (frame,) = iter_video_frames(path)
    assert frame.image.shape == (STORED_W, STORED_H, 3) and _square_corner(frame.image) == corner


def test_upright_follows_ffmpeg_autorotate() -> None:
    """``_upright`` on arrays: each display matrix as ffplay's autorotate filters (transpose, hflip, vflip) show it."""
    stored = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    assert _upright(stored, (1, 0, 0, 1)) is stored
    assert np.array_equal(_upright(stored, (0, 1, -1, 0)), np.rot90(stored, -1))  # transpose=clock
    assert np.array_equal(_upright(stored, (0, -1, 1, 0)), np.rot90(stored, 1))  # transpose=cclock
    assert np.array_equal(_upright(stored, (-1, 0, 0, -1)), np.rot90(stored, 2))  # hflip + vflip
    assert np.array_equal(_upright(stored, (0, 1, 1, 0)), stored.transpose(1, 0, 2))  # transpose=cclock_flip
    assert np.array_equal(_upright(stored, (-1, 0, 0, 1)), stored[:, ::-1])  # hflip
    assert np.array_equal(_upright(stored, (1, 0, 0, -1)), stored[::-1])  # vflip


class _FrameOfANewerFFmpeg:
    """A PyAV frame whose side data includes a type PyAV cannot name: only ``rotation`` can be read."""

    rotation = -90

    @property
    def side_data(self) -> None:
        raise ValueError("31 is not a valid Type")


def test_unnamed_side_data_falls_back_to_the_frame_rotation() -> None:
    assert _orientation(_FrameOfANewerFFmpeg()) == (0, 1, -1, 0)  # transpose=clock


def test_rotated_video_is_analysed_upright(tmp_path: Path) -> None:
    path = _write(tmp_path / "phone.mp4", [_stored_picture()] * 5, rotation=-90)
    result = tiny_analyzer().analyze_video(path, fps=5, audio=False)
    assert (result.width, result.height) == (STORED_H, STORED_W)
    assert [f.time for f in result.frames] == pytest.approx([0.0, 0.2, 0.4])


# --------------------------------------------------------------------------------------------------
# Variable frame rate


def _vfr_times_ms() -> list[int]:
    """2 s of frames 20, 50 and 100 ms apart in turn, a 1 s freeze, then five frames 20 ms apart."""
    times, gaps = [0], (20, 50, 100)
    while times[-1] + gaps[len(times) % 3] < 2000:
        times.append(times[-1] + gaps[len(times) % 3])
    return times + [times[-1] + 1000 + 20 * k for k in range(1, 6)]


def _sampled(times: list[float], step: float) -> list[int]:
    """Indices of the first frame at or after each multiple of ``step`` (each frame at most once)."""
    picked: list[int] = []
    for k in range(int(times[-1] / step) + 1):
        first = next(i for i, t in enumerate(times) if t >= k * step - 1e-6)
        if first not in picked:
            picked.append(first)
    return picked


def _vfr_video(path: Path) -> tuple[Path, list[float]]:
    times_ms = _vfr_times_ms()
    images = [np.full((120, 160, 3), 60 + (7 * k) % 150, np.uint8) for k in range(len(times_ms))]
    return _write(path, images, times_ms=times_ms, rate=25), [t / 1000 for t in times_ms]


def test_variable_frame_rate_is_sampled_by_time(tmp_path: Path) -> None:
    path, times = _vfr_video(tmp_path / "vfr.mp4")
    every = list(iter_video_frames(path))
    assert [f.time for f in every] == pytest.approx(times)  # decoded with the timestamps written
    frames = list(iter_video_frames(path, fps=5))
    expected = _sampled(times, 0.2)
    assert [f.index for f in frames] == expected  # none repeated, none lost
    assert [f.time for f in frames] == pytest.approx([times[i] for i in expected])
    kept = np.array([f.time for f in frames])
    before_freeze = kept[kept < 2.0]
    assert np.all(np.diff(kept) > 0)
    assert np.all(np.abs(np.diff(before_freeze) - 0.2) <= 0.1 + 1e-6)  # the largest regular gap is 0.1 s
    # After the freeze: its first frame, then the first at 3.0 s; not all five while catching up with the clock.
    assert kept[kept > 2.0].tolist() == pytest.approx([times[-5], next(t for t in times if t >= 3.0)])


def test_variable_frame_rate_annotates(tmp_path: Path) -> None:
    path, times = _vfr_video(tmp_path / "vfr.mp4")
    report = annotate_files([path], tmp_path / "out", SETTINGS, analyzer=tiny_analyzer())
    assert report.ok and len(report.done) == 1
    faces = load_annotations(tmp_path / "out").faces
    expected = _sampled(times, 0.2)
    assert faces["frame"].tolist() == expected
    assert faces["time"].tolist() == pytest.approx([times[i] for i in expected])


# --------------------------------------------------------------------------------------------------
# 4K accepted, 8K refused


def _peak_rss_mib(reset: bool = False) -> float | None:
    """This process's peak resident memory in MiB (Linux ``VmHWM``), restarted from now with ``reset``;
    ``None`` where the system cannot tell (``ru_maxrss`` cannot be restarted, so earlier peaks would hide this one)."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def test_4k_video_annotates_and_8k_is_recorded_as_refused(tmp_path: Path) -> None:
    picture = np.full((2160, 3840, 3), 90, np.uint8)
    uhd = _write(tmp_path / "uhd.mp4", [picture] * 4, rate=4)
    huge = _write(tmp_path / "huge8k.mp4", [np.zeros((4320, 7680, 3), np.uint8)], codec="mpeg4", rate=4)
    del picture
    kind, info = probe(uhd)
    assert kind == "video" and info is not None and (info.width, info.height) == (3840, 2160)
    analyzer = tiny_analyzer()
    before = _peak_rss_mib(reset=True)
    report = annotate_files([uhd, huge], tmp_path / "out", SETTINGS, analyzer=analyzer)
    after = _peak_rss_mib()
    if before is not None and after is not None:  # frames are streamed: a 4K frame is 24 MiB
        assert after - before < 1024, f"peak memory grew by {after - before:.0f} MiB for 4 frames of 4K"
    assert len(report.done) == 1 and len(report.failed) == 1  # one refused input does not stop the run
    faces = load_annotations(tmp_path / "out").faces
    assert faces["time"].tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75])
    ((path, reason),) = report.failed
    assert path == str(huge) and "video frames too large (7680x4320 = 33.2 megapixels" in reason
    (error,) = [json.loads(line) for line in (tmp_path / "out" / ERRORS).read_text().splitlines()]
    assert error["path"] == str(huge) and error["reason"] == reason

"""Malformed inputs: every one must give a clear ``MediaError`` ("<source>: <problem>") or a valid result.

The corpus is built inside the test run (in a temporary folder): nothing is downloaded and no media file
is committed. Each case states its exact expected outcome; ``test_report`` prints a table of them all::

    pytest tests/test_bad_input.py -q -s -k report
"""

from __future__ import annotations

import functools
import io
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import wave
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image

from affectlens import Analyzer, MediaError
from affectlens.types import AnalysisResult
from demo.samples import PORTRAIT, load_portrait, make_sample_video

REPO = Path(__file__).resolve().parents[1]
#: A case that takes longer than this is reported as a hang.
CASE_TIMEOUT_S = 30.0
#: Analysis settings for every case: a few frames are enough to prove a video decodes.
FPS, MAX_FRAMES = 5.0, 6


# --------------------------------------------------------------------------------------------------
# Source material, generated once per session.


@functools.cache
def portrait_jpeg() -> bytes:
    """The shipped sample portrait (a real baseline JPEG with one face)."""
    return PORTRAIT.read_bytes()


@functools.cache
def portrait_small() -> np.ndarray:
    """The portrait as a 128x128 RGB array: small enough for GIF/WebP/TIFF frames."""
    return np.asarray(Image.fromarray(load_portrait()).resize((128, 128), Image.Resampling.BILINEAR))


@functools.cache
def sample_mp4(seconds: float = 1.0, fps: int = 5) -> bytes:
    """A real 160x120 H.264 MP4 with one face, written by the project's ``VideoWriter``."""
    with tempfile.TemporaryDirectory() as tmp:
        return make_sample_video(Path(tmp) / "sample.mp4", seconds=seconds, fps=fps, size=(160, 120)).read_bytes()


def encode_image(array: np.ndarray, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def portrait_as(mode: str, fmt: str) -> bytes:
    """The full-size portrait converted to a Pillow ``mode`` and saved as ``fmt``."""
    buf = io.BytesIO()
    Image.fromarray(load_portrait()).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int = 1, colour_type: int = 0, rows: int | None = None) -> bytes:
    """A PNG of all-zero pixels built by hand, so huge sizes cost only their (tiny) compressed size.

    ``rows`` limits how many rows of pixel data are actually written (the header still says ``height``).
    """
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + (width * channels * bit_depth + 7) // 8)  # filter byte + packed zero pixels
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height if rows is None else rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    plte = png_chunk(b"PLTE", b"\0\0\0") if colour_type == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + plte + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def mp4_boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level MP4 boxes: type -> (start, end) byte offsets."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        elif size == 0:
            size = len(data) - pos
        boxes[kind] = (pos, pos + size)
        pos += size
    return boxes


def junk(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------------------------------
# Builders: each makes one input in ``d`` (a fresh folder) and returns what is passed to ``analyze``.


def jpeg_sof_resized(width: int, height: int) -> bytes:
    """The portrait JPEG with its frame header (SOF0) claiming another size."""
    data = bytearray(portrait_jpeg())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_patched(offset: int, fmt: str, value: int) -> bytes:
    data = bytearray(encode_image(portrait_small(), "BMP"))
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def png_bad_crc() -> bytes:
    data = bytearray(encode_image(portrait_small(), "PNG"))
    data[29] ^= 0xFF  # last byte of the IHDR CRC (8 signature + 8 chunk head + 13 data)
    return bytes(data)


def png_without_idat() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def wav_bytes(seconds: float = 0.2, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return buf.getvalue()


def gif_bytes(frames: int) -> bytes:
    images = [Image.fromarray(np.roll(portrait_small(), 4 * k, axis=1)) for k in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=frames > 1, append_images=images[1:], duration=200, loop=0)
    return buf.getvalue()


def multi_frame_bytes(fmt: str, frames: int = 3) -> bytes:
    images = [Image.fromarray(np.roll(portrait_small(), 4 * k, axis=1)) for k in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format=fmt, save_all=True, append_images=images[1:], duration=200)
    return buf.getvalue()


def mp4_truncated(fraction: float) -> bytes:
    data = sample_mp4()
    return data[: int(len(data) * fraction)]


def mp4_without_moov() -> bytes:
    data = sample_mp4()
    start, end = mp4_boxes(data)[b"moov"]
    return data[:start] + data[end:]


def mp4_mdat_zeroed() -> bytes:
    """Every sample's bytes replaced by zeros; the index (moov) still describes them."""
    data = bytearray(sample_mp4())
    start, end = mp4_boxes(bytes(data))[b"mdat"]
    data[start + 8 : end] = bytes(end - start - 8)
    return bytes(data)


def mp4_faststart_truncated(d: Path, fraction: float) -> bytes:
    """A 3 s sample remuxed with the index first (``faststart``), then cut: the index outlives the data."""
    import av

    src, dst = write(d / "src.mp4", sample_mp4(3.0, 10)), d / "faststart.mp4"
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        istream = inp.streams.video[0]
        ostream = out.add_stream_from_template(istream)
        for packet in inp.demux(istream):
            if packet.dts is None:
                continue
            packet.stream = ostream
            out.mux(packet)
    data = dst.read_bytes()
    src.unlink()
    dst.unlink()
    assert list(mp4_boxes(data))[:2] == [b"ftyp", b"moov"], "faststart remux did not move the index first"
    return data[: int(len(data) * fraction)]


def zero_frame_video(path: Path, codec: str) -> Path:
    """A container given one 64x64 video stream and no frame (the container is chosen by the suffix)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
        for packet in stream.encode():
            out.mux(packet)
    return path


def mp4_of_size(path: Path, width: int, height: int, frames: int = 1) -> Path:
    from affectlens.visualize import VideoWriter

    with VideoWriter(path, 5, width, height) as writer:
        for _ in range(frames):
            writer.write(np.zeros((height, width, 3), np.uint8))
    return path


def directory(d: Path) -> Path:
    (d / "a_folder.jpg").mkdir()
    return d / "a_folder.jpg"


def dotdot_to_real_jpeg(d: Path) -> str:
    """``<d>/sub/../real.jpg``: a path through ``..`` to a real JPEG."""
    (d / "sub").mkdir()
    write(d / "real.jpg", portrait_jpeg())
    return f"{d}/sub/../real.jpg"


def broken_symlink(d: Path) -> Path:
    link = d / "dangling.jpg"
    link.symlink_to(d / "gone.jpg")
    return link


def symlink_loop(d: Path) -> Path:
    (d / "loop_a.jpg").symlink_to(d / "loop_b.jpg")
    (d / "loop_b.jpg").symlink_to(d / "loop_a.jpg")
    return d / "loop_a.jpg"


def fifo(d: Path) -> Path:
    path = d / "pipe.mp4"
    os.mkfifo(path)
    return path


def unreadable(d: Path) -> Path:
    path = write(d / "locked.png", encode_image(portrait_small(), "PNG"))
    path.chmod(0)
    return path


def can_read_anything() -> bool:
    """Root (as in many containers) reads files whatever their mode bits say."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------------------------------
# The corpus.

Call = Literal["analyze", "analyze_image"]


@dataclass(frozen=True)
class Case:
    """One malformed (or merely unusual) input and what ``Analyzer`` must do with it.

    Exactly one of ``error`` (a keyword the ``MediaError`` problem must contain, case-insensitive) and
    ``kind`` (the result kind expected) is set. ``faces``: ``0`` means "no face, with the no-face
    warning", ``1`` means "at least one face", ``None`` means "don't care".
    """

    name: str
    build: Callable[[Path], Any]
    error: str | None = None
    kind: str | None = None
    faces: int | None = None
    warning: str | None = None
    call: Call = "analyze"
    #: The text the error must name instead of the file's base name.
    source: str | None = None

    @property
    def is_file(self) -> bool:
        """Whether the input is a path the CLI can take (cases named ``array_*`` pass arrays)."""
        return self.call == "analyze" and not self.name.startswith("array_") and self.source != "<array>"


def ok(name: str, build: Callable[[Path], Any], kind: str, faces: int | None = None, **kw: Any) -> Case:
    return Case(name, build, kind=kind, faces=faces, **kw)


def bad(name: str, build: Callable[[Path], Any], error: str, **kw: Any) -> Case:
    return Case(name, build, error=error, **kw)


def arr(value: Callable[[], Any]) -> Callable[[Path], Any]:
    return lambda d: value()


CASES: list[Case] = [
    # --- the file system --------------------------------------------------------------------------
    bad("missing_file", lambda d: d / "does_not_exist.jpg", "file not found"),
    bad("directory", directory, "not a regular file"),
    bad("dotdot_to_missing", lambda d: f"{d}/sub/../nope.mp4", "file not found"),
    ok("dotdot_to_real_jpeg", dotdot_to_real_jpeg, "image", 1),
    bad("nul_byte_in_path", lambda d: f"{d}/bad\x00name.jpg", "nul byte", source="bad\\x00name.jpg"),
    bad("very_long_file_name", lambda d: d / ("x" * 300 + ".jpg"), "file name too long"),
    bad("broken_symlink", broken_symlink, "broken symbolic link"),
    bad("symlink_loop", symlink_loop, "symbolic link loop"),
    bad("fifo_named_pipe", fifo, "not a regular file"),
    bad("char_device_dev_null", lambda d: "/dev/null", "not a regular file", source="/dev/null"),
    (
        ok("unreadable_mode_000", unreadable, "image")  # root reads it anyway
        if can_read_anything()
        else bad("unreadable_mode_000", unreadable, "permission denied")
    ),
    # --- empty and not media at all ---------------------------------------------------------------
    bad("zero_byte_jpg", lambda d: write(d / "empty.jpg", b""), "empty file"),
    bad("zero_byte_mp4", lambda d: write(d / "empty.mp4", b""), "empty file"),
    bad(
        "text_named_txt",
        lambda d: write(d / "notes.txt", b"hello, this is not a picture\n" * 20),
        "looks like a text file",
    ),
    bad(
        "text_named_jpg",
        lambda d: write(d / "notes.jpg", b"hello, this is not a picture\n" * 20),
        "not a readable image or video",
    ),
    bad(
        "html_named_jpg",
        lambda d: write(d / "page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
        "not a readable image or video",
    ),
    bad(
        "pdf_header_named_jpg",
        lambda d: write(
            d / "doc.jpg", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + junk(2000, 1)
        ),
        "not a readable image or video",
    ),
    bad(
        "zip_named_mp4",
        lambda d: write(d / "archive.mp4", b"PK\x03\x04" + junk(3000, 2)),
        "not a readable image or video",
    ),
    bad("null_bytes_named_jpg", lambda d: write(d / "zeros.jpg", bytes(4096)), "not a readable image or video"),
    bad("random_junk_png", lambda d: write(d / "junk.png", junk(5000, 3)), "not a readable image or video"),
    bad("random_junk_mp4", lambda d: write(d / "junk.mp4", junk(5000, 4)), "not a readable image or video"),
    bad("random_junk_avi", lambda d: write(d / "junk.avi", junk(5000, 5)), "not a readable image or video"),
    # --- broken images ----------------------------------------------------------------------------
    bad(
        "truncated_jpeg_half",
        lambda d: write(d / "half.jpg", portrait_jpeg()[: len(portrait_jpeg()) // 2]),
        "truncated",
    ),
    bad("jpeg_header_only", lambda d: write(d / "soi.jpg", portrait_jpeg()[:200]), "truncated"),
    bad(
        "truncated_png_half",
        lambda d: write(d / "half.png", (p := encode_image(portrait_small(), "PNG"))[: len(p) // 2]),
        "truncated",
    ),
    # Pillow refuses a bad IHDR checksum; FFmpeg ignores checksums and decodes it as a one-frame "video".
    ok("png_bad_crc", lambda d: write(d / "crc.png", png_bad_crc()), "video", 1),
    bad("png_without_idat", lambda d: write(d / "noidat.png", png_without_idat()), "corrupt"),
    bad("png_zero_width", lambda d: write(d / "zero_w.png", png_bytes(0, 64)), "not a readable image or video"),
    bad("bmp_corrupt_bpp", lambda d: write(d / "bpp.bmp", bmp_patched(28, "<H", 7)), "corrupt"),
    bad("bmp_corrupt_header_size", lambda d: write(d / "hdr.bmp", bmp_patched(14, "<I", 0xFFFF)), "corrupt"),
    bad("bmp_pixel_offset_past_end", lambda d: write(d / "off.bmp", bmp_patched(10, "<I", 10_000_000)), "truncated"),
    bad("gif_truncated_half", lambda d: write(d / "cut.gif", (g := gif_bytes(1))[: len(g) // 2]), "truncated"),
    bad("gif_cut_inside_palette", lambda d: write(d / "cut300.gif", gif_bytes(1)[:300]), "no frame could be decoded"),
    # --- too large / too small --------------------------------------------------------------------
    bad("png_bomb_20000x20000_1bit", lambda d: write(d / "bomb.png", png_bytes(20000, 20000)), "too large"),
    bad("png_48mp_over_cap", lambda d: write(d / "big.png", png_bytes(8000, 6000)), "too large"),
    bad(
        "png_header_100000x100000",
        lambda d: write(d / "huge_hdr.png", png_bytes(100_000, 100_000, rows=4)),
        "too large",
    ),
    bad("jpeg_header_65000x65000", lambda d: write(d / "huge_sof.jpg", jpeg_sof_resized(65000, 65000)), "too large"),
    bad("image_1x1", lambda d: write(d / "dot.png", encode_image(np.zeros((1, 1, 3), np.uint8), "PNG")), "too small"),
    bad("image_4x4", lambda d: write(d / "tiny.png", encode_image(np.zeros((4, 4, 3), np.uint8), "PNG")), "too small"),
    bad("video_frames_too_large", lambda d: mp4_of_size(d / "wide.mp4", 4352, 2176), "video frames too large"),
    bad("video_2x2", lambda d: mp4_of_size(d / "speck.mp4", 2, 2, frames=3), "too small"),
    # --- unusual but valid images -----------------------------------------------------------------
    ok(
        "all_zero_png_no_face",
        lambda d: write(d / "black.png", encode_image(np.zeros((64, 64, 3), np.uint8), "PNG")),
        "image",
        0,
    ),
    ok(
        "greyscale_png",
        lambda d: write(d / "grey.png", encode_image(load_portrait().mean(2).astype(np.uint8), "PNG")),
        "image",
        1,
    ),
    ok("rgba_png", lambda d: write(d / "rgba.png", portrait_as("RGBA", "PNG")), "image", 1),
    ok(
        "png_16bit_grey",
        lambda d: write(d / "deep.png", encode_image((load_portrait().mean(2) * 257).astype(np.uint16), "PNG")),
        "image",
        1,
    ),
    ok("palette_png", lambda d: write(d / "pal.png", portrait_as("P", "PNG")), "image"),
    ok("cmyk_jpeg", lambda d: write(d / "cmyk.jpg", portrait_as("CMYK", "JPEG")), "image", 1),
    ok("gif_single_frame", lambda d: write(d / "still.gif", gif_bytes(1)), "image"),
    ok("gif_animated_is_video", lambda d: write(d / "anim.gif", gif_bytes(4)), "video"),
    ok("webp_animated_is_video", lambda d: write(d / "anim.webp", multi_frame_bytes("WEBP")), "video"),
    ok("tiff_multipage_is_video", lambda d: write(d / "pages.tif", multi_frame_bytes("TIFF")), "video"),
    ok("mpo_camera_jpeg_is_image", lambda d: write(d / "camera.jpg", multi_frame_bytes("MPO", 2)), "image", 1),
    ok("jpeg_renamed_mp4", lambda d: write(d / "photo.mp4", portrait_jpeg()), "image", 1),
    ok("mp4_renamed_jpg", lambda d: write(d / "clip.jpg", sample_mp4()), "video", 1),
    ok("jpeg_no_extension", lambda d: write(d / "photo", portrait_jpeg()), "image", 1),
    ok("unicode_file_name", lambda d: write(d / "фото 😀 ü.jpg", portrait_jpeg()), "image", 1),
    # --- broken video -----------------------------------------------------------------------------
    bad("truncated_mp4_30pct", lambda d: write(d / "cut30.mp4", mp4_truncated(0.3)), "corrupt"),
    bad("mp4_moov_atom_cut", lambda d: write(d / "nomoov.mp4", mp4_without_moov()), "corrupt"),
    bad(
        "mp4_ftyp_only", lambda d: write(d / "ftyp.mp4", sample_mp4()[: mp4_boxes(sample_mp4())[b"ftyp"][1]]), "corrupt"
    ),
    bad(
        "mp4_unknown_codec_fourcc",
        lambda d: write(d / "fourcc.mp4", sample_mp4().replace(b"avc1", b"zzzz")),
        "unsupported or corrupt video codec",
    ),
    bad("mp4_samples_zeroed", lambda d: write(d / "zeroed.mp4", mp4_mdat_zeroed()), "no frame could be decoded"),
    # Half the data: ~6 of 30 frames decode (frame-threaded decoding may vary that by one or two, and may
    # end with an error or just stop), well under MAX_FRAMES at FPS so the loop reaches the cut.
    ok(
        "mp4_faststart_cut_at_50pct",
        lambda d: write(d / "faststart_cut.mp4", mp4_faststart_truncated(d, 0.5)),
        "video",
        1,
        warning="later frames are missing",
    ),
    bad(
        "mp4_faststart_cut_at_15pct",
        lambda d: write(d / "faststart_cut15.mp4", mp4_faststart_truncated(d, 0.15)),
        "no frame could be decoded",
    ),
    bad("avi_zero_frames", lambda d: zero_frame_video(d / "no_frames.avi", "mpeg4"), "holds no frames"),
    bad("mp4_zero_frames", lambda d: zero_frame_video(d / "no_frames.mp4", "libx264"), "no video stream"),
    bad("mkv_zero_frames", lambda d: zero_frame_video(d / "no_frames.mkv", "libx264"), "not a readable image or video"),
    # Sound without pictures is audio: silence gives an empty result that says no speech was found.
    ok("wav_audio_only", lambda d: write(d / "voice.wav", wav_bytes()), "audio", warning="no speech found"),
    ok("wav_renamed_mp4", lambda d: write(d / "voice.mp4", wav_bytes()), "audio", warning="no speech found"),
    # --- arrays and other Python objects ----------------------------------------------------------
    ok("array_all_zero_no_face", arr(lambda: np.zeros((64, 64, 3), np.uint8)), "image", 0),
    ok("array_float_0_1", arr(lambda: load_portrait().astype(np.float32) / 255), "image", 1),
    ok("array_8x4000_extreme_aspect", arr(lambda: np.full((8, 4000, 3), 128, np.uint8)), "image", 0),
    ok("array_int16_out_of_range", arr(lambda: np.full((32, 32), -500, np.int16)), "image", 0),
    bad("array_nan", arr(lambda: np.full((32, 32, 3), np.nan, np.float32)), "NaN"),
    bad("array_inf", arr(lambda: np.full((32, 32, 3), np.inf)), "infinite"),
    bad("array_4d", arr(lambda: np.zeros((2, 32, 32, 3), np.uint8)), "unsupported array shape"),
    bad("array_2_channels", arr(lambda: np.zeros((32, 32, 2), np.uint8)), "unsupported array shape"),
    bad("array_1d", arr(lambda: np.zeros(100, np.uint8)), "unsupported array shape"),
    bad("array_0d", arr(lambda: np.array(5)), "unsupported array shape"),
    bad("array_bool", arr(lambda: np.ones((32, 32), bool)), "unsupported array dtype bool"),
    bad("array_object", arr(lambda: np.full((32, 32), None, object)), "unsupported array dtype object"),
    bad("array_str", arr(lambda: np.full((32, 32), "a")), "unsupported array dtype"),
    bad("array_complex", arr(lambda: np.ones((32, 32), np.complex64)), "unsupported array dtype complex64"),
    bad("array_datetime", arr(lambda: np.zeros((32, 32), "datetime64[s]")), "unsupported array dtype"),
    bad("array_empty_0x0", arr(lambda: np.zeros((0, 0), np.uint8)), "too small"),
    bad("array_empty_0x0x3", arr(lambda: np.zeros((0, 0, 3), np.uint8)), "too small"),
    bad("array_1x1", arr(lambda: np.zeros((1, 1, 3), np.uint8)), "too small"),
    bad("array_20000x20000_view", arr(lambda: np.broadcast_to(np.uint8(0), (20000, 20000, 3))), "too large"),
    bad(
        "list_to_analyze_image",
        arr(lambda: [[0] * 32] * 32),
        "expected a file path or a numpy array",
        call="analyze_image",
        source="<array>",
    ),
    bad(
        "none_to_analyze_image",
        arr(lambda: None),
        "expected a file path or a numpy array",
        call="analyze_image",
        source="<array>",
    ),
    bad(
        "list_instead_of_array",
        arr(lambda: [[0] * 32] * 32),
        "expected a file path or a numpy array",
        source="<array>",
    ),
    bad(
        "bytes_instead_of_path",
        arr(portrait_jpeg),
        "expected",
        source="<array>",
    ),
]
CASES_BY_NAME = {case.name: case for case in CASES}
assert len(CASES_BY_NAME) == len(CASES), "duplicate case names"


# --------------------------------------------------------------------------------------------------
# Running a case.


@dataclass(frozen=True)
class Outcome:
    """What one case did: ``status`` is "result", "MediaError", "hang" or another exception's type name."""

    status: str
    detail: str
    value: Any = None  # the AnalysisResult or the exception


def describe(result: AnalysisResult) -> str:
    text = f"{result.kind} {result.width}x{result.height}, {len(result.frames)} frame(s), {result.num_faces} face(s)"
    return text + "".join(f"; warning: {w.split(': ', 1)[-1] if ': ' in w else w}" for w in result.warnings)


def run_case(analyzer: Analyzer, case: Case, folder: Path) -> tuple[Any, Outcome]:
    """Build ``case`` in ``folder`` and analyse it in a watchdog thread, so that a hang is reported, not waited on."""
    folder.mkdir(parents=True, exist_ok=True)
    value = case.build(folder)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            if case.call == "analyze_image":
                box["result"] = analyzer.analyze_image(value)
            else:
                box["result"] = analyzer.analyze(value, fps=FPS, max_frames=MAX_FRAMES)
        except BaseException as exc:  # any exception is an outcome to report
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"case-{case.name}", daemon=True)
    thread.start()
    thread.join(CASE_TIMEOUT_S)
    if thread.is_alive():
        return value, Outcome("hang", f"no answer after {CASE_TIMEOUT_S:.0f} s")
    if "error" in box:
        exc = box["error"]
        status = "MediaError" if isinstance(exc, MediaError) else type(exc).__name__
        return value, Outcome(status, str(exc).replace("\x00", "\\x00"), exc)
    return value, Outcome("result", describe(box["result"]), box["result"])


def expected_source(case: Case, value: Any) -> str:
    if case.source is not None:
        return case.source
    if isinstance(value, np.ndarray):
        return "<array>"
    return os.path.basename(os.fspath(value))


def check_outcome(case: Case, value: Any, outcome: Outcome) -> None:
    """Assert that ``outcome`` is exactly what ``case`` expects."""
    if case.error is not None:
        assert outcome.status == "MediaError", f"{case.name}: expected MediaError ({case.error}), got {outcome}"
        message = outcome.detail
        assert expected_source(case, value) in message, f"{case.name}: message does not name the input: {message}"
        assert case.error.lower() in outcome.value.problem.lower(), f"{case.name}: {message!r} lacks {case.error!r}"
        assert "Traceback" not in message
        return
    assert outcome.status == "result", f"{case.name}: expected a {case.kind} result, got {outcome}"
    result: AnalysisResult = outcome.value
    assert isinstance(result, AnalysisResult)
    assert result.kind == case.kind, f"{case.name}: {describe(result)}"
    if result.kind in ("image", "video"):
        assert len(result.frames) >= 1
        assert result.width is not None and result.height is not None
        assert result.width >= 8 and result.height >= 8
    else:  # sound only: no pictures, and the result says what it heard
        assert result.frames == () and result.width is None
    if case.faces == 0:
        assert result.num_faces == 0, describe(result)
        assert any("no face found" in w for w in result.warnings), result.warnings
    elif case.faces is not None:
        assert result.num_faces >= case.faces, describe(result)
    if case.warning is not None:
        assert any(case.warning in w for w in result.warnings), f"{case.name}: {describe(result)}"
    json.loads(result.to_json())  # every result serialises


def collect_outcomes(analyzer: Analyzer, root: Path) -> list[tuple[Case, Outcome]]:
    """Run every case (each in its own sub-folder of ``root``) and return what each did; prints nothing."""
    return [(case, run_case(analyzer, case, root / case.name)[1]) for case in CASES]


def format_table(rows: list[tuple[Case, Outcome]], root: Path | None = None) -> str:
    """One line per case: name, expected outcome, actual outcome (paths shown relative to ``root``)."""
    width = max(len(case.name) for case, _ in rows)
    lines = [f"{'case':<{width}}  {'expected':<46}  outcome", "-" * (width + 120)]
    for case, outcome in rows:
        if case.error is not None:
            want = f"MediaError '{case.error}'"
        else:
            want = f"{case.kind} result" + {None: "", 0: ", no face", 1: ", face(s)"}[case.faces]
        detail = outcome.detail.replace(f"{root}{os.sep}", "") if root is not None else outcome.detail
        lines.append(f"{case.name:<{width}}  {want:<46}  {outcome.status}: {detail}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Tests.


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


@pytest.fixture(autouse=True)
def _restore_modes(tmp_path: Path) -> Iterator[None]:
    """Give back read/write permission on anything a case locked, so tmp_path can be cleaned."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink() and not stat.S_IMODE(path.stat().st_mode) & stat.S_IRUSR:
            path.chmod(0o644)


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert sum(case.error is not None for case in CASES) >= 30


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in CASES])
def test_python_api(analyzer: Analyzer, case: Case, tmp_path: Path) -> None:
    value, outcome = run_case(analyzer, case, tmp_path)
    check_outcome(case, value, outcome)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES if c.is_file])
def test_cli_in_process(analyzer: Analyzer, case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from affectlens.cli import main

    value = case.build(tmp_path)
    assert isinstance(value, str | os.PathLike), f"{case.name} is not a path: name it array_*"
    path = os.fspath(value)
    code = main(["analyze", path, "--json", "--fps", str(FPS), "--max-frames", str(MAX_FRAMES)], analyzer=analyzer)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if case.error is not None:
        assert code == 1, (out, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected_source(case, path) in err.replace("\x00", "\\x00")
        assert case.error.lower() in err.lower(), err
        assert json.loads(out) == []
    else:
        assert code == 0, err
        payload = json.loads(out)
        assert payload["kind"] == case.kind
        assert payload["num_frames"] >= 1 or payload["kind"] == "audio"


def test_cli_text_output_for_bad_and_good_files(
    analyzer: Analyzer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several paths at once: one error line per bad file, the good file still analysed, exit code 1."""
    from affectlens.cli import main

    good = write(tmp_path / "good.jpg", portrait_jpeg())
    bad_files = [tmp_path / "missing.jpg", write(tmp_path / "empty.mp4", b""), write(tmp_path / "j.png", junk(999, 9))]
    assert main(["analyze", str(bad_files[0]), str(good), *map(str, bad_files[1:])], analyzer=analyzer) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: image 512x512, 1 face(s)")
    lines = err.splitlines()
    assert [line.split(": ")[1] for line in lines] == [str(p) for p in bad_files]
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in err


SUBPROCESS_CASES = [
    "missing_file",
    "truncated_jpeg_half",
    "zero_byte_mp4",
    "fifo_named_pipe",
    "png_bomb_20000x20000_1bit",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "affectlens.cli", *args], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )


def test_cli_subprocess_each_bad_file_alone(tmp_path: Path) -> None:
    for name in SUBPROCESS_CASES[:2]:
        case = CASES_BY_NAME[name]
        (tmp_path / name).mkdir()
        path = os.fspath(case.build(tmp_path / name))
        proc = run_cli("analyze", path)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path}: "), proc.stderr
        assert case.error is not None and case.error.lower() in errors[0].lower(), proc.stderr
        assert proc.stdout == ""


def test_cli_subprocess_many_bad_files(tmp_path: Path) -> None:
    """One process, several malformed files (a fifo among them: it must not hang) and one good file."""
    paths = []
    for name in SUBPROCESS_CASES:
        (tmp_path / name).mkdir()
        paths.append(os.fspath(CASES_BY_NAME[name].build(tmp_path / name)))
    good = write(tmp_path / "good.jpg", portrait_jpeg())
    proc = run_cli("analyze", *paths, str(good), "--json")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(paths), proc.stderr
    for line, path, name in zip(errors, paths, SUBPROCESS_CASES, strict=True):
        expected = CASES_BY_NAME[name].error
        assert line.startswith(f"error: {path}: ") and expected is not None and expected.lower() in line.lower(), line
    payload = json.loads(proc.stdout)
    assert [item["source"] for item in payload] == [str(good)] and payload[0]["num_faces"] >= 1


def test_report(analyzer: Analyzer, tmp_path: Path) -> None:
    """Print every case and what it returned (run with ``-s -k report``); none may raise anything else."""
    rows = collect_outcomes(analyzer, tmp_path)
    print("\n" + format_table(rows, tmp_path))
    unexpected = [(case.name, outcome) for case, outcome in rows if outcome.status not in ("result", "MediaError")]
    assert not unexpected, unexpected


def test_text_that_is_not_unicode_is_a_clear_error(analyzer: Analyzer) -> None:
    with pytest.raises(MediaError, match=r"not valid Unicode \(a lone surrogate, U\+D800, at 3\)"):
        analyzer.analyze_text("abc\ud800def")
    with pytest.raises(MediaError, match="lone surrogate"):
        analyzer.analyze(text="\udfff")

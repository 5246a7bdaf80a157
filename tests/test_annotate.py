"""``affectlens annotate``: tables per input, manifest and provenance, bad input, resuming after kill -9.

Most tests run a tiny analyzer (fixed boxes, a randomly initialised but seeded expression net, a fake voice),
so they need no weights; the subprocess tests reach it through ``$AFFECTLENS_ANNOTATE_ANALYZER``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectlens import Analyzer, load_annotations
from affectlens import annotate as ann
from affectlens.annotate import (
    FACE_COLUMNS,
    TIMELINE_COLUMNS,
    UTTERANCE_COLUMNS,
    AnnotateError,
    AnnotateSettings,
    annotate_files,
    build_timeline,
    collect_inputs,
    video_id,
)
from affectlens.cli import main
from affectlens.visualize import VideoWriter
from perception.face.detector import Detections
from tests.test_analyzer_multimodal import FakeText, FakeVoice, _write_av

REPO = Path(__file__).resolve().parents[1]
FACTORY = "tests.test_annotate:tiny_analyzer"


class BrightDetector:
    """One fixed box on frames that are not dark; nothing on dark frames (a 'video with no faces')."""

    name = "bright-fixed"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        time.sleep(self.delay)
        found = image.mean() > 20
        boxes = np.array([[10, 10, 60, 60]] if found else np.zeros((0, 4)), np.float32).reshape(-1, 4)
        return Detections(boxes, np.full(len(boxes), 0.9, np.float32), None)


def tiny_analyzer() -> Analyzer:
    """The analyzer every test here uses (also in subprocesses): the same seeded weights in every process.

    ``$ANNOTATE_TEST_DELAY`` slows the detector (seconds per call); ``$ANNOTATE_TEST_CRASH`` (``write:N`` or
    ``manifest:N``) makes the process SIGKILL itself just before the N-th atomic rename of a table file, or of
    ``manifest.json``: the temporary file is complete, the rename has not happened.
    """
    import torch

    from affectlens.registry import create_face_expression
    from perception.face.pipeline import FacePipeline

    crash = os.environ.get("ANNOTATE_TEST_CRASH")
    if crash:
        what, _, nth = crash.partition(":")
        real_replace, count = os.replace, [0]

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            is_manifest = Path(dst).name == ann.MANIFEST
            if (what == "manifest") == is_manifest and Path(dst).name != ann.ERRORS:
                count[0] += 1
                if count[0] == int(nth):
                    os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        ann.os.replace = replace  # type: ignore[assignment]
    torch.manual_seed(0)
    detector = BrightDetector(float(os.environ.get("ANNOTATE_TEST_DELAY", "0")))
    face = FacePipeline(detector, create_face_expression(pretrained=False))  # type: ignore[arg-type]
    return Analyzer(face=face, voice=FakeVoice(), text=FakeText())  # type: ignore[arg-type]


def _blank_video(path: Path, seconds: float = 1.0) -> Path:
    with VideoWriter(path, 10, 128, 128) as writer:
        for _ in range(int(seconds * 10)):
            writer.write(np.zeros((128, 128, 3), np.uint8))
    return path


def _videos(folder: Path, n: int, seconds: float = 1.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [_write_av(folder / f"clip{k}.mp4", seconds=seconds) for k in range(n)]


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("video", "frame", "face", "utterance", "track", "segment") if c in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Inputs and ids


def test_inputs_from_folders_lists_and_files(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "sub" / "deeper").mkdir(parents=True)
    (media / ".hidden").mkdir()
    for name in ("a.mp4", "sub/b.WAV", "sub/deeper/c.mkv", "notes.md", ".secret.mp4", ".hidden/d.mp4"):
        (media / name).write_bytes(b"x")
    out = media / "out"  # an output folder inside an input folder is never read as input
    out.mkdir()
    (out / "e.mp4").write_bytes(b"x")
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("# my inputs\nodd.bin\nmedia/a.mp4  # again: taken once\n\nmissing.mp4\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    files, problems = collect_inputs([media, listing, empty, tmp_path / "nope.mov"], exclude=out)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "media/a.mp4", "media/sub/b.WAV", "media/sub/deeper/c.mkv", "odd.bin",
    ]  # fmt: skip
    assert all(f.is_absolute() for f in files)
    assert [(Path(p.path).name, p.reason) for p in problems] == [
        ("missing.mp4", "file not found"),
        ("empty", "folder holds no video or audio files"),
        ("nope.mov", "file not found"),
    ]


def test_video_ids_keep_equal_names_apart(tmp_path: Path) -> None:
    a, b = tmp_path / "day1" / "talk.mp4", tmp_path / "day2" / "talk.mp4"
    assert video_id(a) != video_id(b)
    assert video_id(a).startswith("talk-") and video_id(a) == video_id(str(a))
    assert video_id(tmp_path / "we ird:name!.mp4").startswith("we_ird_name-")


# --------------------------------------------------------------------------------------------------
# The timeline


def _faces(track: int, states: list[str], fps: float = 5.0, start: float = 0.0, skip: tuple[int, ...] = ()) -> list:
    return [
        {"video": "v", "track": track, "time": start + k / fps, "state": s, "smoothed_confidence": 0.5 + 0.01 * k}
        for k, s in enumerate(states)
        if k not in skip
    ]


def _utterances(*spans: tuple[float, float, str, str], speaker: int | None = 1) -> pd.DataFrame:
    rows = [
        {"video": "v", "utterance": k, "start": s, "end": e, "text": t, "speech_label": lbl, "speaker_track": speaker}
        for k, (s, e, t, lbl) in enumerate(spans)
    ]
    return pd.DataFrame(rows, columns=list(UTTERANCE_COLUMNS))


def test_timeline_cuts_only_on_changes_that_last(tmp_path: Path) -> None:
    # 5 fps: 0.2 s per frame. Two frames of sadness (0.4 s) flicker inside happiness; four (0.8 s) are a change.
    states = ["happiness"] * 5 + ["sadness"] * 2 + ["happiness"] * 3 + ["sadness"] * 4 + ["uncertain"] * 2
    faces = pd.DataFrame(_faces(1, states))
    spans = _utterances((0.1, 0.5, "hello", "happiness"), (1.7, 3.0, "oh no", "sadness"), (9.0, 9.5, "later", "anger"))
    timeline = build_timeline(faces, spans, step=0.2, min_segment=0.5)
    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    assert timeline[["label", "start", "end", "frames"]].values.tolist() == [
        ["happiness", 0.0, pytest.approx(2.0), 10],
        ["sadness", pytest.approx(2.0), pytest.approx(3.2), 6],  # the trailing 0.4 s of uncertain is a flicker
    ]
    assert timeline["segment"].tolist() == [0, 1] and (timeline["track"] == 1).all()
    assert timeline["confidence"].iloc[0] == pytest.approx(np.mean([0.5 + 0.01 * k for k in range(10)]))
    # Utterances overlapping each segment and spoken by its track; heard_utterances: by time only.
    assert timeline["utterances"].tolist() == ["0,1", "1"] == timeline["heard_utterances"].tolist()
    assert timeline["transcript"].tolist() == ["hello | oh no", "oh no"]
    assert timeline["voice_label"].tolist() == ["happiness", "sadness"]  # the utterance overlapping most


def test_timeline_separates_tracks_gaps_and_a_flickering_start() -> None:
    first = _faces(1, ["anger"] + ["neutral"] * 6)  # a one-frame start joins the segment after it
    second = _faces(2, ["fear"] * 10, skip=(4, 5, 6, 7))  # lost for 1 s: two segments, no bridge
    timeline = build_timeline(pd.DataFrame(first + second), _utterances(), step=0.2, min_segment=0.5)
    assert timeline[["track", "label", "start", "end", "frames"]].values.tolist() == [
        [1, "neutral", 0.0, pytest.approx(1.4), 7],
        [2, "fear", 0.0, pytest.approx(0.8), 4],
        [2, "fear", pytest.approx(1.6), pytest.approx(2.0), 2],
    ]
    assert timeline["utterances"].isna().all() and timeline["voice_label"].isna().all()
    empty = build_timeline(pd.DataFrame(columns=list(FACE_COLUMNS)), _utterances(), step=0.2)
    assert empty.empty and list(empty.columns) == list(TIMELINE_COLUMNS)


# --------------------------------------------------------------------------------------------------
# A run, its files and its manifest


def test_annotate_writes_tables_manifest_and_provenance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (video,) = _videos(tmp_path / "in", 1, seconds=1.0)
    out = tmp_path / "out"
    code = main(["annotate", str(video), "-o", str(out), "--fps", "5", "--quiet"], analyzer=tiny_analyzer())
    printed = capsys.readouterr()
    assert code == 0 and "1 annotated, 0 already done, 0 failed" in printed.out and printed.err == ""
    vid = video_id(video)
    assert sorted(p.name for p in (out / vid).iterdir()) == [
        "faces.parquet", "keyframes", "plots", "report.html", "timeline.parquet", "utterances.parquet",
    ]  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["affectlens"] == ann.__version__
    assert manifest["settings"] == {
        "fps": 5.0,
        "modalities": ["face", "voice"],
        "format": "parquet",
        "min_segment": 0.5,
    }
    assert manifest["runs"][0]["workers"] == 1 and manifest["runs"][0]["engine"] == "local"
    entry = manifest["videos"][vid]
    assert entry["status"] == "done" and entry["input"] == str(video) and entry["size"] == video.stat().st_size
    assert entry["sha256"] == hashlib.sha256(video.read_bytes()).hexdigest()
    assert entry["models"]["detector"] == "bright-fixed" and entry["models"]["asr"] == "fake-asr"
    assert manifest["models"]["detector"] == "bright-fixed" and isinstance(manifest["weights"], dict)
    assert (out / "errors.jsonl").read_text() == ""

    data = load_annotations(out)
    assert list(data.faces.columns) == list(FACE_COLUMNS)
    assert entry["outputs"]["faces"]["rows"] == len(data.faces) == 5  # 1 s at 5 fps, one face per frame
    assert (data.faces["video"] == vid).all() and data.faces["track"].notna().all()
    assert data.faces["time"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    probs = data.faces[list(ann.CANONICAL_EMOTIONS)].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (data.faces["label"] == data.faces[list(ann.CANONICAL_EMOTIONS)].idxmax(axis=1)).all()
    assert data.faces["state"].notna().all()
    assert data.utterances[["utterance", "start", "end", "text", "speech_label", "pitch_mean"]].values.tolist() == [
        [0, 0.2, 1.1, "hello there", "sadness", 180.0]
    ]
    assert data.utterances["text_label"].isna().all()  # the fake voice gives no text emotion
    (segment,) = data.timeline.itertuples()
    assert segment.frames == 5 and segment.start == 0.0 and segment.end == pytest.approx(1.0)
    assert segment.label == data.faces["state"].iloc[-1] and segment.heard_utterances == "0"
    # The tiny analyzer has no face mesh, so no mouth to see: the speaker is unknown, the face only hears it.
    assert data.utterances["speaker_track"].isna().all() and data.faces["mouth_open"].isna().all()
    assert pd.isna(segment.utterances) and pd.isna(segment.voice_label) and pd.isna(segment.transcript)
    assert data.errors.empty and data["manifest"] == manifest


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_format_reads_back_the_same_tables(tmp_path: Path, fmt: str) -> None:
    (video,) = _videos(tmp_path / "in", 1, seconds=1.0)
    analyzer = tiny_analyzer()
    annotate_files([video], tmp_path / "parquet", AnnotateSettings(fps=5), analyzer=analyzer)
    annotate_files([video], tmp_path / fmt, AnnotateSettings(fps=5, format=fmt), analyzer=analyzer)  # type: ignore[arg-type]
    assert (tmp_path / fmt / video_id(video) / f"faces.{fmt}").is_file()
    reference, other = load_annotations(tmp_path / "parquet"), load_annotations(tmp_path / fmt)
    for name in ("faces", "utterances", "timeline"):
        pd.testing.assert_frame_equal(getattr(other, name), getattr(reference, name), check_exact=True)
    assert len(reference.faces) == 5


def test_modalities_face_only_and_voice_only(tmp_path: Path) -> None:
    (video,) = _videos(tmp_path / "in", 1, seconds=1.0)
    analyzer = tiny_analyzer()
    face_only = annotate_files(
        [video], tmp_path / "f", AnnotateSettings(fps=5, modalities=("face",)), analyzer=analyzer
    )
    voice_only = annotate_files(
        [video], tmp_path / "v", AnnotateSettings(fps=5, modalities=("voice",)), analyzer=analyzer
    )
    assert face_only.ok and voice_only.ok
    faces, voice = load_annotations(tmp_path / "f"), load_annotations(tmp_path / "v")
    assert len(faces.faces) == 5 and faces.utterances.empty and faces.timeline["utterances"].isna().all()
    assert voice.faces.empty and voice.timeline.empty and len(voice.utterances) == 1
    assert voice.manifest["videos"][video_id(video)]["kind"] == "audio"


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = _write_av(folder / "good.mp4")
    silent = _write_av(folder / "silent.mp4", audio=False)
    blank = _blank_video(folder / "blank.mp4")
    voice = _write_av(folder / "voice.m4a", video=False)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    junk = folder / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 50)
    text = tmp_path / "readme.md"
    text.write_text("hello, I am not a video\n" * 20)
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out"
    argv = ["annotate", str(folder), str(text), str(image), str(fifo), str(missing), "-o", str(out), "--fps", "5"]
    code = main([*argv, "--quiet"], analyzer=tiny_analyzer())
    assert code == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = {Path(e["path"]).name: e["reason"] for e in errors}
    assert set(reasons) == {"truncated.mp4", "junk.mp4", "readme.md", "photo.png", "pipe.mp4", "missing.mp4"}
    for e in errors:
        assert e["reason"].startswith(e["path"] + ":")  # every reason names its file
    assert "not a regular file" in reasons["pipe.mp4"] and "file not found" in reasons["missing.mp4"]
    assert "an image, not a video" in reasons["photo.png"] and "not a readable" in reasons["readme.md"]
    assert "not a readable" in reasons["junk.mp4"] and "truncated.mp4" in reasons["truncated.mp4"]
    printed = capsys.readouterr().out
    assert "4 annotated, 0 already done, 6 failed" in printed and f"failed: {missing}: file not found" in printed

    data = load_annotations(out)
    rows = data.faces.groupby("video").size().to_dict()
    assert rows == {video_id(good): 5, video_id(silent): 5}  # 1 s sampled at 5 fps; none in the blank video
    assert data.utterances["video"].tolist() == [video_id(good), video_id(voice)]
    manifest = data.manifest["videos"]
    assert manifest[video_id(voice)]["kind"] == "audio" and manifest[video_id(voice)]["frames"] == 0
    assert any("no sound track" in w for w in manifest[video_id(silent)]["warnings"])
    assert any("no face found" in w for w in manifest[video_id(blank)]["warnings"])
    assert manifest[video_id(blank)]["outputs"]["faces"]["rows"] == 0
    assert sorted(data.errors["path"].map(lambda p: Path(p).name)) == sorted(reasons)


def test_a_full_disk_fails_that_input_only_and_a_rerun_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _videos(tmp_path / "in", 2)
    real_write = ann._atomic_write

    def full_disk(path: Path, data: bytes) -> None:
        if path.parent.name == video_id(second) and path.name.startswith("utterances"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(ann, "_atomic_write", full_disk)
    analyzer = tiny_analyzer()
    report = annotate_files([first, second], tmp_path / "out", AnnotateSettings(fps=5), analyzer=analyzer)
    assert report.done == (video_id(first),) and len(report.failed) == 1
    path, reason = report.failed[0]
    assert path == str(second) and "utterances.parquet: could not write (No space left on device)" in reason
    errors = (tmp_path / "out" / "errors.jsonl").read_text()
    assert "No space left on device" in errors and str(second) in errors
    monkeypatch.setattr(ann, "_atomic_write", real_write)
    again = annotate_files([first, second], tmp_path / "out", AnnotateSettings(fps=5), analyzer=analyzer)
    assert again.ok and again.skipped == (video_id(first),) and again.done == (video_id(second),)
    assert (tmp_path / "out" / "errors.jsonl").read_text() == ""
    assert len(load_annotations(tmp_path / "out").faces) == 10


def test_rerun_skips_done_inputs_and_redoes_changed_ones(tmp_path: Path) -> None:
    a, b, c = _videos(tmp_path / "in", 3)
    out = tmp_path / "out"
    analyzer = tiny_analyzer()
    detector = analyzer.face.detector
    assert annotate_files([tmp_path / "in"], out, AnnotateSettings(fps=5), analyzer=analyzer).ok
    calls = detector.calls  # type: ignore[attr-defined]
    again = annotate_files([tmp_path / "in"], out, AnnotateSettings(fps=5), analyzer=analyzer)
    assert again.done == () and len(again.skipped) == 3 and detector.calls == calls  # type: ignore[attr-defined]
    _write_av(b, seconds=2.0)  # new content: its checksum no longer matches
    (out / video_id(c) / "timeline.parquet").unlink()  # an output gone missing
    third = annotate_files([tmp_path / "in"], out, AnnotateSettings(fps=5), analyzer=analyzer)
    assert set(third.done) == {video_id(b), video_id(c)} and third.skipped == (video_id(a),)
    data = load_annotations(out)
    assert data.faces.groupby("video").size().to_dict() == {video_id(a): 5, video_id(b): 10, video_id(c): 5}
    with pytest.raises(AnnotateError, match="was written with"):
        annotate_files([a], out, AnnotateSettings(fps=2), analyzer=analyzer)


def test_cli_refuses_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["annotate", str(tmp_path), "-o", str(tmp_path / "o"), "--modalities", "face,smell"]) == 2
    assert "unknown modality 'smell'; choose from face, voice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["annotate", str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "spark"])
    assert exc.value.code == 2


def test_progress_bars_go_to_stderr_unless_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (video,) = _videos(tmp_path / "in", 1)
    assert main(["annotate", str(video), "-o", str(tmp_path / "out"), "--fps", "5"], analyzer=tiny_analyzer()) == 0
    err = capsys.readouterr().err
    assert "annotate: 100%" in err and "1/1" in err


# --------------------------------------------------------------------------------------------------
# Processes: worker pools and kill -9


def _cli(inputs: list[Path], out: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "affectlens.cli", "annotate", *map(str, inputs), "-o", str(out), "--fps", "5"]
    if "--workers" not in extra:  # the crash hooks count this process's writes: keep the work in it
        argv += ["--workers", "1"]
    environ = {**os.environ, ann.ANALYZER_ENV: FACTORY, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen([*argv, "--quiet", *extra], cwd=REPO, env=environ, stderr=subprocess.PIPE)


def _done(out: Path) -> int:
    try:
        videos = json.loads((out / "manifest.json").read_text())["videos"]
    except (FileNotFoundError, ValueError):
        return 0
    return sum(v["status"] == "done" for v in videos.values())


def test_kill_9_at_any_point_then_resume_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    videos = _videos(tmp_path / "in", 4)
    reference = tmp_path / "reference"
    assert annotate_files(videos, reference, AnnotateSettings(fps=5), analyzer=tiny_analyzer()).ok
    out = tmp_path / "out"
    # 1. Killed inside a table write (the 5th: the second video's utterances), before its rename.
    run = _cli(videos, out, ANNOTATE_TEST_CRASH="write:5")
    assert run.wait(60) == -signal.SIGKILL
    assert _done(out) == 1 and list(out.glob(f"*/.utterances.parquet{ann._TMP_MARK}*"))
    # 2. Killed after the third video's tables are written, before the manifest says so.
    run = _cli(videos, out, ANNOTATE_TEST_CRASH="manifest:2")  # counted from the first input (2nd video) on
    assert run.wait(60) == -signal.SIGKILL
    assert _done(out) == 2 and len(list((out / video_id(videos[2])).glob("*.parquet"))) == 3
    # 3. Killed from outside while the fourth video is being analysed.
    run = _cli(videos, out, ANNOTATE_TEST_DELAY="0.3")
    deadline = time.monotonic() + 60
    while _done(out) < 3 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    assert run.wait(60) == -signal.SIGKILL and _done(out) == 3
    # 4. Resume to the end.
    run = _cli(videos, out)
    assert run.wait(60) == 0, run.stderr.read().decode() if run.stderr else ""
    assert _done(out) == 4 and not list(out.rglob(f"*{ann._TMP_MARK}*"))
    got, want = load_annotations(out), load_annotations(reference)
    for name in ("faces", "utterances", "timeline"):
        pd.testing.assert_frame_equal(_sorted(getattr(got, name)), _sorted(getattr(want, name)), check_exact=True)
    assert len(got.faces) == 20 and len(got.utterances) == 4
    runs = got.manifest["runs"]
    assert len(runs) == 4 and all(v["status"] == "done" for v in got.manifest["videos"].values())


def test_workers_give_the_same_tables_as_one_process(tmp_path: Path) -> None:
    videos = _videos(tmp_path / "in", 3)
    serial = annotate_files(videos, tmp_path / "serial", AnnotateSettings(fps=5), analyzer=tiny_analyzer())
    pooled = annotate_files(
        videos, tmp_path / "pooled", AnnotateSettings(fps=5, workers=2), analyzer_factory=tiny_analyzer
    )
    assert serial.ok and pooled.ok and set(pooled.done) == {video_id(v) for v in videos}
    got, want = load_annotations(tmp_path / "pooled"), load_annotations(tmp_path / "serial")
    for name in ("faces", "utterances", "timeline"):
        pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name), check_exact=True)
    assert got.manifest["runs"][0]["workers"] == 2
    with pytest.raises(AnnotateError, match="analyzer_factory"):
        annotate_files(videos, tmp_path / "x", AnnotateSettings(workers=2), analyzer=tiny_analyzer())


def test_two_runs_never_write_one_folder(tmp_path: Path) -> None:
    (video,) = _videos(tmp_path / "in", 1)
    out = tmp_path / "out"
    run = _cli([video], out, ANNOTATE_TEST_DELAY="1.0")
    deadline = time.monotonic() + 60
    while not (out / "manifest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        with pytest.raises(AnnotateError, match="another annotate run"):
            annotate_files([video], out, AnnotateSettings(fps=5), analyzer=tiny_analyzer())
    finally:
        run.kill()
        run.wait(60)


# --------------------------------------------------------------------------------------------------
# Real weights


@pytest.mark.weights
def test_real_analyzer_fills_geometry_and_a_timeline(analyzer, tmp_path: Path) -> None:
    from demo.samples import make_sample_video

    video = make_sample_video(tmp_path / "sample.mp4", seconds=2.0, fps=10, size=(320, 240))
    report = annotate_files([video], tmp_path / "out", AnnotateSettings(fps=2), analyzer=analyzer)
    assert report.ok
    data = load_annotations(tmp_path / "out")
    assert len(data.faces) == 4 and data.faces["track"].notna().all()
    assert data.faces[["AU12", "yaw", "gaze_yaw", "valence", "mouth_open"]].notna().all().all()
    assert len(data.timeline) >= 1 and data.timeline["frames"].sum() == 4
    assert data.manifest["weights"] and all(len(sha) == 64 for sha in data.manifest["weights"].values())


def test_a_manifest_that_cannot_be_written_stops_the_run_with_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (video,) = _videos(tmp_path / "in", 1)
    real_write = ann._atomic_write

    def full_disk(path: Path, data: bytes) -> None:
        if path.name == "manifest.json" and path.exists():  # the first write works, later ones hit a full disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(ann, "_atomic_write", full_disk)
    with pytest.raises(AnnotateError, match=r"manifest.json: could not be written"):
        annotate_files([video], tmp_path / "out", AnnotateSettings(fps=5), analyzer=tiny_analyzer())
    monkeypatch.setattr(ann, "_atomic_write", real_write)
    assert _done(tmp_path / "out") == 0  # the tables are there, but unrecorded: a re-run redoes them
    assert annotate_files([video], tmp_path / "out", AnnotateSettings(fps=5), analyzer=tiny_analyzer()).done


def test_cli_sizes_the_worker_pool_to_the_cores() -> None:
    from affectlens.cli import _annotate_workers, build_parser

    def workers(*argv: str, analyzer: object = None) -> int:
        args = build_parser().parse_args(["annotate", "in", "-o", "out", *argv])
        args.analyzer = analyzer
        return _annotate_workers(args)

    assert workers() == (os.cpu_count() or 1)
    assert workers("--workers", "3") == 3
    assert workers(analyzer=object()) == 1  # an injected analyzer lives in this process
    assert workers("--engine", "ray") == 1  # one actor per CPU of the cluster

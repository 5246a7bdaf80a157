"""``affectlens.report``: the HTML report per annotated input and the index page, written by ``annotate``.

The runs use tiny injected parts (two fixed face boxes, a seeded random expression net, a fake voice with two
utterances), so they need no weights; one test runs the real analyzer (``-m weights``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from affectlens import Analyzer, load_annotations
from affectlens import report as rep
from affectlens.annotate import AnnotateSettings, annotate_files, video_id
from affectlens.cli import main
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import EmotionPrediction, Prosody, TextEmotion, Utterance
from perception.face.detector import Detections
from tests.test_analyzer_multimodal import FakeText, FakeVoice, _write_av

BOXES = [[4, 4, 60, 60], [68, 60, 124, 118]]  # two faces on the 128x128 test video


class TwoFaces:
    """The same two boxes on every frame: two persons (face tracks) for the whole video."""

    name = "two-fixed"

    def detect(self, image: np.ndarray) -> Detections:
        return Detections(np.array(BOXES, np.float32), np.full(len(BOXES), 0.9, np.float32), None)


def _emotion(label: str, source: str) -> EmotionPrediction:
    vector = np.eye(len(CANONICAL_EMOTIONS))[CANONICAL_EMOTIONS.index(label)]
    return EmotionPrediction.from_vector(vector, source, valence=-0.5, arousal=0.2)


class TalkingVoice(FakeVoice):
    """Two utterances: the second transcript holds markup that the page must show as text."""

    def __call__(self, path: object, warnings: list[str] | None = None) -> tuple[Utterance, ...]:
        self.calls.append(str(path))
        prosody = Prosody(pitch_mean=180.0, pitch_range=4.0, energy=-20.0, speaking_rate=4.0, pause_ratio=0.1)
        words = TextEmotion(_emotion("happiness", "fake-text"), {"joy": 0.9}, (("hello", 1.0),))
        return (
            Utterance(0, 0.2, 1.1, "hello there", _emotion("sadness", "fake-voice"), words, prosody),
            Utterance(1, 1.3, 1.9, "<i>me</i> & you", _emotion("anger", "fake-voice"), None, prosody),
        )


def two_face_analyzer() -> Analyzer:
    import torch

    from affectlens.registry import create_face_expression
    from perception.face.pipeline import FacePipeline

    torch.manual_seed(0)
    face = FacePipeline(TwoFaces(), create_face_expression(pretrained=False))  # type: ignore[arg-type]
    return Analyzer(face=face, voice=TalkingVoice(), text=FakeText())  # type: ignore[arg-type]


def _links(page: Path) -> list[str]:
    """Every ``src`` and ``href`` of a page that points at a file (anchors left out), unescaped."""
    found = re.findall(r'(?:src|href)="([^"]*)"', page.read_text(encoding="utf-8"))
    return [unquote(html.unescape(link)) for link in found if not link.startswith("#")]


def _assert_links_resolve(page: Path) -> list[Path]:
    targets = [(page.parent / link).resolve() for link in _links(page)]
    missing = [str(t) for t in targets if not t.is_file()]
    assert not missing, f"{page} links to missing files: {missing}"
    return targets


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One annotate run: a 2 s two-person talk, a copy with markup in its name, an audio file, a broken file."""
    root = tmp_path_factory.mktemp("report")
    media = root / "in"
    media.mkdir()
    talk = _write_av(media / "talk.mp4", seconds=2.0)
    odd = media / "a<script>b&c.mp4"
    shutil.copyfile(talk, odd)
    voice = _write_av(media / "voice.m4a", video=False)
    broken = media / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 40)
    out = root / "out"
    result = annotate_files([media], out, AnnotateSettings(fps=5), analyzer=two_face_analyzer())
    assert len(result.done) == 3 and [Path(p).name for p, _ in result.failed] == ["broken.mp4"]
    return {"out": out, "talk": talk, "odd": odd, "voice": voice, "broken": broken}


def test_report_shows_each_person_plots_key_frames_and_statistics(run: dict[str, Path]) -> None:
    out, talk = run["out"], run["talk"]
    folder = out / video_id(talk)
    page = folder / "report.html"
    text = page.read_text(encoding="utf-8")
    data = load_annotations(out)
    faces = data.faces[data.faces["video"] == folder.name]
    timeline = data.timeline[data.timeline["video"] == folder.name]
    assert sorted(faces["track"].unique()) == [0, 1] and len(faces) == 20  # 2 s at 5 fps, two faces per frame

    # One section and one plot per person, plus the overview (2 persons + voice + words rows).
    for track in (0, 1):
        assert f'id="person-{track}"' in text and f'src="plots/person-{track}.png"' in text
        with Image.open(folder / "plots" / f"person-{track}.png") as im:
            im.load()
            assert im.format == "PNG" and im.size == rep.plot_size("person")
    with Image.open(folder / "plots" / "overview.png") as im:
        im.load()
        assert im.size == rep.plot_size("overview", rows=4)
    assert sorted(p.name for p in (folder / "plots").iterdir()) == ["overview.png", "person-0.png", "person-1.png"]

    # A key frame per segment: the face crop at its most confident frame, drawn from the video itself.
    picks = rep.pick_keyframes(faces, timeline)
    assert len(picks) == len(timeline) >= 2
    for pick in picks:
        jpg = folder / "keyframes" / f"t{pick.track}-s{pick.segment}.jpg"
        assert f'src="keyframes/{jpg.name}"' in text
        with Image.open(jpg) as im:
            thumb = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert max(thumb.shape[:2]) == rep.THUMBNAIL
        from perception.media import iter_video_frames

        frame = next(f for f in iter_video_frames(talk, fps=5) if f.index == pick.frame)
        expected = rep.face_thumbnail(frame.image, pick.box, pick.label).astype(np.float32)
        assert thumb.shape == expected.shape and np.abs(thumb - expected).mean() < 6  # JPEG noise only
    assert len(list((folder / "keyframes").iterdir())) == len(picks)

    # Summary statistics.
    assert "<b>2.0 s</b><span>duration</span>" in text and "<b>10</b><span>frames analysed</span>" in text
    assert "<b>2</b><span>persons (face tracks)</span>" in text and "<b>2</b><span>utterances</span>" in text
    people = rep.persons(faces, timeline)
    assert [p.track for p in people] == [0, 1]
    for person in people:
        assert person.frames == 10 and person.visible == pytest.approx(2.0)
        assert person.valence == pytest.approx(faces[faces["track"] == person.track]["valence"].mean())
        assert f"<td class=num>{person.valence:+.2f}</td>" in text
    assert ">sadness 100%</span>" in text and ">anger 100%</span>" in text  # voice emotion per utterance
    assert "sadness</span> 1 (50%)" in text and "happiness</span> 1 (100%)" in text  # voice and words
    assert "two-fixed" in text and "fake-voice" in text  # models from the manifest
    entry = data.manifest["videos"][folder.name]
    assert entry["report"]["file"] == f"{folder.name}/report.html" and entry["report"]["persons"] == 2
    assert entry["report"]["keyframes"] == len(picks)
    _assert_links_resolve(page)


def test_text_from_file_names_and_transcripts_is_escaped(run: dict[str, Path]) -> None:
    out = run["out"]
    page = (out / video_id(run["odd"]) / "report.html").read_text(encoding="utf-8")
    index = (out / "index.html").read_text(encoding="utf-8")
    for text in (page, index):
        assert "<script" not in text and "a&lt;script&gt;b&amp;c.mp4" in text
    assert "<i>me</i>" not in page and "&lt;i&gt;me&lt;/i&gt; &amp; you" in page
    assert "<script" not in (out / video_id(run["talk"]) / "report.html").read_text(encoding="utf-8")


def test_audio_only_report_has_speech_and_no_persons(run: dict[str, Path]) -> None:
    folder = run["out"] / video_id(run["voice"])
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="person-' not in text and 'id="speech"' in text and "hello there" in text
    assert not (folder / "keyframes").exists()
    with Image.open(folder / "plots" / "overview.png") as im:
        assert im.size == rep.plot_size("overview", rows=2)  # voice and words


def test_index_lists_every_input_with_status_and_working_links(run: dict[str, Path]) -> None:
    out = run["out"]
    index = out / "index.html"
    text = index.read_text(encoding="utf-8")
    targets = _assert_links_resolve(index)
    reports = {t for t in targets if t.name == "report.html"}
    assert reports == {(out / video_id(run[k]) / "report.html").resolve() for k in ("talk", "odd", "voice")}
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    (failure,) = errors
    assert Path(failure["path"]).name == "broken.mp4" and html.escape(failure["reason"]) in text
    rows = re.findall(r"<tr><td><span class=\"chip status-(\w+)\">", text)
    assert sorted(rows) == ["done", "done", "done", "failed"]
    assert "<b>4</b><span>inputs</span>" in text and "<b>1</b><span>failed</span>" in text
    # Each report links back to the index.
    for report in reports:
        assert (report.parent / "../index.html").resolve() == index.resolve()
        assert 'href="../index.html"' in report.read_text(encoding="utf-8")


def test_a_broken_report_keeps_the_tables_and_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    talk = _write_av(tmp_path / "talk.mp4", seconds=1.0)

    def boom(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("boom")

    monkeypatch.setattr(rep, "write_video_report", boom)
    result = annotate_files([talk], tmp_path / "out", AnnotateSettings(fps=5), analyzer=two_face_analyzer())
    assert result.ok and result.done == (video_id(talk),)
    data = load_annotations(tmp_path / "out")
    assert len(data.faces) == 10
    entry = data.manifest["videos"][video_id(talk)]
    assert entry["status"] == "done" and "report" not in entry
    assert any(w.endswith("report not written (RuntimeError: boom)") for w in entry["warnings"])
    index = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "no report" in index and "<td class=num>2</td>" in index  # persons read from the tables instead


def test_no_report_flag_then_resume_keeps_reports_and_rewrites_the_index(tmp_path: Path) -> None:
    talk = _write_av(tmp_path / "talk.mp4", seconds=1.0)
    out = tmp_path / "out"
    argv = ["annotate", str(talk), "-o", str(out), "--fps", "5", "--quiet"]
    assert main([*argv, "--no-report"], analyzer=two_face_analyzer()) == 0
    assert not (out / "index.html").exists() and not (out / video_id(talk) / "report.html").exists()
    assert main(argv, analyzer=two_face_analyzer()) == 0  # skipped: done already; the index appears
    assert "no report" in (out / "index.html").read_text(encoding="utf-8")

    other = tmp_path / "other"
    report = other / video_id(talk) / "report.html"
    assert annotate_files([talk], other, AnnotateSettings(fps=5), analyzer=two_face_analyzer()).ok
    before = report.stat().st_mtime_ns, report.read_bytes()
    (other / "index.html").unlink()
    again = annotate_files([talk], other, AnnotateSettings(fps=5), analyzer=two_face_analyzer())
    assert again.skipped == (video_id(talk),) and (report.stat().st_mtime_ns, report.read_bytes()) == before
    index = (other / "index.html").read_text(encoding="utf-8")
    assert (
        "<b>2</b><span>runs</span>" in index and _links(other / "index.html") == [f"{video_id(talk)}/report.html"] * 2
    )


def test_key_frames_are_bounded_and_take_the_most_confident_frame() -> None:
    # One track, 30 segments of 1 to 30 frames (5 fps); the frame where the label's probability peaks is known.
    faces, segments, t = [], [], 0.0
    labels = [*CANONICAL_EMOTIONS, "uncertain"]
    for k in range(30):
        label = labels[k % len(labels)]
        n = k + 1
        start = t
        for i in range(n):
            probs = dict.fromkeys(CANONICAL_EMOTIONS, 0.05)
            if label in probs:
                probs[label] = 0.3 + 0.6 * (i == n // 2)
            faces.append({"track": 0, "time": t, "frame": len(faces), "x1": 1.0, "y1": 2.0, "x2": 3.0, "y2": 4.0,
                          "smoothed_confidence": 0.2 + 0.5 * (i == n // 2), **probs})  # fmt: skip
            t = round(t + 0.2, 6)
        segments.append({"track": 0, "segment": k, "start": start, "end": t, "label": label})
    picks = rep.pick_keyframes(pd.DataFrame(faces), pd.DataFrame(segments), limit=24)
    assert sorted(p.segment for p in picks) == list(range(6, 30))  # the 24 longest
    assert [p.time for p in picks] == sorted(p.time for p in picks)
    for pick in picks:
        seg = segments[pick.segment]
        assert pick.time == pytest.approx(seg["start"] + 0.2 * ((pick.segment + 1) // 2))  # the peak frame
        assert pick.label == seg["label"] and pick.box == (1.0, 2.0, 3.0, 4.0)


@pytest.mark.weights
def test_real_analyzer_report(analyzer: Analyzer, tmp_path: Path) -> None:
    from demo.samples import make_sample_video

    video = make_sample_video(tmp_path / "sample.mp4", seconds=2.0, fps=10, size=(320, 240))
    assert annotate_files([video], tmp_path / "out", AnnotateSettings(fps=2), analyzer=analyzer).ok
    folder = tmp_path / "out" / video_id(video)
    text = (folder / "report.html").read_text(encoding="utf-8")
    data = load_annotations(tmp_path / "out")
    tracks = sorted(int(t) for t in data.faces["track"].unique())
    assert tracks and all(f'id="person-{t}"' in text for t in tracks)
    thumbs = sorted((folder / "keyframes").glob("*.jpg"))
    assert len(thumbs) == len(data.timeline) >= 1
    with Image.open(thumbs[0]) as im:
        assert max(im.size) == rep.THUMBNAIL and np.asarray(im).std() > 10  # a real picture, not a blank
    _assert_links_resolve(folder / "report.html")
    _assert_links_resolve(tmp_path / "out" / "index.html")

"""Analyzer routing for audio, text, a video's sound track and several inputs of one moment (one affective tree),
with tiny injected voice and text parts; the CLI's --tree, --together and --explain."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from affectlens import Analyzer, MediaError
from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.tree import AffectTree
from affectlens.types import EmotionPrediction, Prosody, TextEmotion, Utterance
from demo.samples import load_portrait
from tests.conftest import validate
from tests.test_face_pipeline import FixedDetector


class FakeText:
    """Calls everything it reads 'happiness' and names its first word as the salient one."""

    name = "fake-text"
    weight_files: dict[str, str] = {}  # noqa: RUF012 - a fixed empty mapping

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, texts: list[str]) -> list[TextEmotion]:
        self.seen.extend(texts)
        vector = np.eye(len(CANONICAL_EMOTIONS))[CANONICAL_EMOTIONS.index("happiness")]
        emotion = EmotionPrediction.from_vector(vector, self.name, valence=0.8, arousal=0.4)
        return [TextEmotion(emotion, {"joy": 0.9, "admiration": 0.2}, ((t.split()[0], 1.0),)) for t in texts]


class FakeVoice:
    """Returns one fixed utterance per call and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: object, warnings: list[str] | None = None) -> tuple[Utterance, ...]:
        self.calls.append(str(path))
        vector = np.eye(len(CANONICAL_EMOTIONS))[CANONICAL_EMOTIONS.index("sadness")]
        voice = EmotionPrediction.from_vector(vector, "fake-voice", valence=-0.6, arousal=-0.3)
        prosody = Prosody(pitch_mean=180.0, pitch_range=4.0, energy=-20.0, speaking_rate=4.0, pause_ratio=0.1)
        return (Utterance(0, 0.2, 1.1, "hello there", voice, None, prosody),)

    def describe(self) -> dict[str, str | None]:
        return {"vad": "fake-vad", "asr": "fake-asr", "speech_emotion": "fake-voice", "text_emotion": None}

    def weight_files(self) -> dict[str, str]:
        return {}


def _write_av(path: Path, seconds: float = 1.0, video: bool = True, audio: bool = True) -> Path:
    """A small MP4 (or M4A) with a portrait video track and/or a 220 Hz tone track."""
    portrait = load_portrait()[::4, ::4]
    with av.open(str(path), "w") as container:
        vstream = container.add_stream("libx264", rate=10) if video else None
        astream = container.add_stream("aac", rate=16000) if audio else None
        if vstream is not None:
            vstream.width, vstream.height, vstream.pix_fmt = 128, 128, "yuv420p"
            for _ in range(int(seconds * 10)):
                for packet in vstream.encode(av.VideoFrame.from_ndarray(portrait, format="rgb24")):
                    container.mux(packet)
            for packet in vstream.encode():
                container.mux(packet)
        if astream is not None:
            t = np.arange(int(seconds * 16000)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, 0, Fraction(1, 16000)
            for packet in [*astream.encode(frame), *astream.encode()]:
                container.mux(packet)
    return path


@pytest.fixture()
def parts() -> tuple[Analyzer, FakeVoice, FakeText]:
    from affectlens.registry import create_face_expression
    from perception.face.pipeline import FacePipeline

    face = FacePipeline(FixedDetector([[10, 10, 60, 60]]), create_face_expression(pretrained=False))
    voice, text = FakeVoice(), FakeText()
    return Analyzer(face=face, voice=voice, text=text), voice, text  # type: ignore[arg-type]


def test_audio_file_goes_to_the_voice_pipeline(parts, tmp_path: Path, result_schema: dict) -> None:
    analyzer, voice, _ = parts
    clip = _write_av(tmp_path / "clip.m4a", video=False)
    result = analyzer.analyze(clip)
    assert result.kind == "audio" and result.frames == () and result.width is None
    assert voice.calls == [str(clip)]
    assert [u.text for u in result.utterances] == ["hello there"]
    assert result.models["asr"] == "fake-asr" and "detector" not in result.models
    validate(result, result_schema)


def test_video_with_sound_gets_faces_and_utterances(parts, tmp_path: Path, result_schema: dict) -> None:
    analyzer, voice, _ = parts
    clip = _write_av(tmp_path / "talk.mp4")
    result = analyzer.analyze(clip, fps=5)
    assert result.kind == "video" and result.num_faces == len(result.frames) > 0
    assert voice.calls == [str(clip)] and len(result.utterances) == 1
    assert result.models["detector"] == "fixed" and result.models["asr"] == "fake-asr"
    validate(result, result_schema)


def test_video_without_sound_never_builds_the_voice_pipeline(tmp_path: Path) -> None:
    from affectlens.registry import create_face_expression
    from perception.face.pipeline import FacePipeline

    analyzer = Analyzer(face=FacePipeline(FixedDetector([[10, 10, 60, 60]]), create_face_expression(pretrained=False)))
    result = analyzer.analyze(_write_av(tmp_path / "silent.mp4", audio=False))
    assert result.utterances == () and analyzer._voice is None and analyzer._text is None


def test_text_is_one_utterance_with_its_emotion(parts, result_schema: dict) -> None:
    analyzer, _, text = parts
    result = analyzer.analyze(text="Wonderful news today")
    assert result.kind == "text" and text.seen == ["Wonderful news today"]
    (utt,) = result.utterances
    assert utt.text_emotion is not None and utt.text_emotion.emotion.label == "happiness"
    assert utt.text_emotion.salient_words == (("Wonderful", 1.0),)
    assert result.models == {"text_emotion": "fake-text"}
    validate(result, result_schema)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("", "empty text"), ("   \n\t", "empty text"), ("x" * 20_001, "text too long"), (b"bytes", "expected text")],
)
def test_bad_text_is_a_clear_error(parts, text: object, problem: str) -> None:
    analyzer, _, fake = parts
    with pytest.raises(MediaError, match=problem):
        analyzer.analyze_text(text)  # type: ignore[arg-type]
    assert fake.seen == []


def test_cli_prints_utterances(parts, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from affectlens import cli

    analyzer, _, _ = parts
    clip = _write_av(tmp_path / "clip.m4a", video=False)
    assert cli.main(["analyze", str(clip), "--text", "Wonderful news today"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert "<text>: text, 1 utterance(s)" in out and "words: happiness 100% (Wonderful)" in out
    assert f"{clip}: audio" in out and "'hello there' voice: sadness 100%" in out and "pitch 180 Hz" in out


def test_analyze_needs_an_input(parts) -> None:
    analyzer, _, _ = parts
    with pytest.raises(ValueError, match="nothing to analyse"):
        analyzer.analyze()
    with pytest.raises(ValueError, match="nothing to analyse"):
        analyzer.analyze([])
    with pytest.raises(MediaError, match="expected text"):
        analyzer.analyze(text=b"bytes")  # type: ignore[arg-type]


def _photo(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(load_portrait()[::2, ::2]).save(path)
    return path


def test_one_input_keeps_its_kind_and_gains_a_tree(parts, result_schema: dict) -> None:
    analyzer, _, _ = parts
    result = analyzer.analyze(text="Wonderful news today")
    assert result.kind == "text" and result.parts == () and result.tree is not None
    assert result.tree.sources == (("<text>", "text"),)
    assert result.tree.cause.value["sentences"][0]["text"] == "Wonderful news today"
    payload = result.to_dict()
    assert "tree" in payload and "parts" not in payload
    validate(result, result_schema)
    assert analyzer.analyze(text="Wonderful news today", tree=False).tree is None


def test_analyze_methods_build_no_tree(parts, tmp_path: Path) -> None:
    analyzer, _, _ = parts
    assert analyzer.analyze_text("Wonderful news today").tree is None
    assert analyzer.analyze_image(load_portrait()).tree is None
    assert analyzer.analyze_audio(_write_av(tmp_path / "clip.m4a", video=False)).tree is None
    assert "tree" not in analyzer.analyze_text("Wonderful news today").to_dict()


def test_a_photo_with_typed_text_is_one_moment(parts, tmp_path: Path, result_schema: dict) -> None:
    analyzer, _, text = parts
    photo = _photo(tmp_path)
    result = analyzer.analyze(photo, text="Wonderful news today")
    assert result.kind == "multimodal" and result.source == f"{photo} + <text>"
    assert [p.kind for p in result.parts] == ["image", "text"] and text.seen == ["Wonderful news today"]
    assert result.num_faces == 1 and len(result.utterances) == 1
    assert result.models["detector"] == "fixed" and result.models["text_emotion"] == "fake-text"
    tree = result.tree
    assert tree is not None and tree.sources == ((str(photo), "image"), ("<text>", "text"))
    assert set(tree.emotion.value["modalities"]) == {"face", "text"}
    assert tree.attributes.value["faces"]["count"] == 1 and tree.attributes.value["words"]["typed"]
    payload = result.to_dict()
    assert [(p["kind"], p["first_frame"], p["num_frames"], p["first_utterance"]) for p in payload["parts"]] == [
        ("image", 0, 1, 0), ("text", 1, 0, 0)
    ]  # fmt: skip
    validate(result, result_schema)
    table = result.to_dataframe()
    assert list(table["source"]) == [str(photo)]


def test_an_image_an_audio_clip_and_text_together(parts, tmp_path: Path, result_schema: dict) -> None:
    analyzer, voice, _ = parts
    photo, clip = _photo(tmp_path), _write_av(tmp_path / "note.m4a", video=False)
    result = analyzer.analyze([photo, clip], text="Wonderful news today")
    assert [p.kind for p in result.parts] == ["image", "audio", "text"] and voice.calls == [str(clip)]
    assert [u.text for u in result.utterances] == ["hello there", "Wonderful news today"]
    tree = result.tree
    assert tree is not None and set(tree.emotion.value["modalities"]) == {"face", "voice", "text"}
    assert tree.attributes.value["voice"]["utterances"] == 1
    assert tree.expressions.value["vocal_tone"]["label"] == "sadness"
    # the voice says sadness, the words happiness: both sure of themselves
    assert tree.emotion.value["agreement"] == "conflict"
    assert {"voice", "text"} <= {m for c in tree.emotion.value["conflicts"] for m in c["modalities"]}
    validate(result, result_schema)
    again = analyzer.combine([result])
    assert again.parts == tuple(dataclasses.replace(p, tree=None) for p in result.parts)


def test_injected_fuser_planner_and_writer_are_used(tmp_path: Path) -> None:
    from fusion.late import LateFusion

    class Writer:
        name = "tiny-lm"

        def write(self, tree: AffectTree, results=()) -> dict[str, str]:
            return {"reply": "Thank you for telling me."}

    calls: list[int] = []

    class Fuser(LateFusion):
        name = "counting-fusion"

        def __call__(self, evidence, results=()):
            calls.append(len(evidence))
            return super().__call__(evidence, results)

    analyzer = Analyzer(
        text=FakeText(),  # type: ignore[arg-type]
        fuser=Fuser(),
        writer=Writer(),
        planner=lambda tree: [("Question", "always ask", 0.5)],
    )
    tree = analyzer.analyze(text="Wonderful news today").tree
    assert tree is not None and calls == [1]
    assert tree.models == {
        "fuser": "counting-fusion", "planner": "<lambda>", "writer": "tiny-lm", "safety": "safety-patterns+meaning"
    }  # fmt: skip
    assert tree.reply.text == "Thank you for telling me." and tree.reply.text_source == "lm:tiny-lm"
    assert [s["strategy"] for s in tree.strategy.value["strategies"]] == ["Question"]


def test_cli_tree_prints_every_stage(parts, capsys: pytest.CaptureFixture[str]) -> None:
    from affectlens import cli

    analyzer, _, _ = parts
    assert cli.main(["analyze", "--text", "Wonderful news today", "--tree"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert out.startswith("Affective tree for <text> (text)")
    for stage in ("attributes", "expressions", "emotion", "cause", "appraisal", "strategy", "reply"):
        assert f" {stage} [" in out
    assert "“Wonderful news today”" in out


def test_cli_together_reads_several_inputs_as_one_moment(
    parts, tmp_path: Path, capsys: pytest.CaptureFixture[str], result_schema: dict
) -> None:
    from affectlens import cli

    analyzer, _, _ = parts
    photo, clip = _photo(tmp_path), _write_av(tmp_path / "clip.m4a", video=False)
    argv = ["analyze", str(photo), str(clip), "--text", "Wonderful news today"]
    assert cli.main([*argv, "--together", "--json"], analyzer=analyzer) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["kind"] == "multimodal" and [p["kind"] for p in payload["parts"]] == ["image", "audio", "text"]
    assert payload["tree"]["sources"][0] == {"source": str(photo), "kind": "image"}
    validate(payload, result_schema)
    assert cli.main([*argv, "--together"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{photo} + {clip} + <text>: multimodal (image, audio, text), 1 face(s)")
    assert "  moment: " in out and "reply: " in out
    # without --tree or --together, several inputs are still analysed one by one
    assert cli.main(argv, analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert "multimodal" not in out and "Affective tree" not in out and f"{clip}: audio" in out


def test_cli_explain_without_the_lm_writer_is_a_clear_error(
    parts, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from affectlens import cli

    analyzer, _, _ = parts
    monkeypatch.setitem(sys.modules, "fusion.reasoner", None)  # import fails as if the module were absent
    assert cli.main(["analyze", "--text", "Wonderful news today", "--explain"], analyzer=analyzer) == 1
    err = capsys.readouterr().err
    assert "error: --explain needs the language-model writer (fusion.reasoner.build_default_writer)" in err
    assert "Traceback" not in err


def test_cli_explain_uses_the_lm_writer(
    parts, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import types

    from affectlens import cli

    class Writer:
        name = "fake-lm"

        def write(self, tree: AffectTree, results=()) -> dict[str, str]:
            return {"rationale": "The words are glad.", "reply": "That sounds lovely."}

    module = types.ModuleType("fusion.reasoner")
    module.build_default_writer = Writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fusion.reasoner", module)
    analyzer, _, _ = parts
    assert cli.main(["analyze", "--text", "Wonderful news today", "--explain"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert "» (lm:fake-lm) The words are glad." in out and "» (lm:fake-lm) That sounds lovely." in out
    assert "writer=fake-lm" in out

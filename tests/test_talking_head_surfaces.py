"""The talking head where people reach it: ``affectlens generate talking-head``, ``Conversation.talking_head``
(a calm face on safety replies) and the demo's ``/talking_head`` and ``/speak_reply`` endpoints. Speech is
eSpeak NG throughout (always installed, and faster than piper)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from affectlens.conversation import CALM_EMOTION, CALM_INTENSITY, _performance_inputs, safety_reply_reason
from affectlens.errors import AffectLensError
from demo.samples import PORTRAIT
from generation.talking_head import FPS, LEAD_IN, TAIL, tree_performance_inputs
from generation.video_out import read_mp4_info
from tests.test_conversation import conversation

SHORT = "I'm sorry. That sounds hard."
CRISIS = "I don't want to be here anymore"


def check_mp4(path: Path, speech_seconds: float, frames: int) -> None:
    """H.264 + AAC, ``frames`` frames at 25 fps, as long as the lead-in, the speech and the tail."""
    info = read_mp4_info(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.fps == pytest.approx(FPS) and info.frames == frames
    assert abs(info.frames - (LEAD_IN + speech_seconds + TAIL) * FPS) <= 1.0
    assert info.audio_duration is not None and info.audio_duration == pytest.approx(info.duration, abs=0.05)


@pytest.fixture(scope="module")
def head():
    """The real talking head (shipped AU basis and shading) with eSpeak NG, loaded once for the module."""
    from affectlens import build_talking_head

    return build_talking_head(engine="espeak-ng")


# ---- the command line ------------------------------------------------------------------------------------


@pytest.mark.weights
def test_cli_writes_an_mp4_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from affectlens.cli import main

    out = tmp_path / "nested" / "reply.mp4"
    argv = ["generate", "talking-head", "--portrait", str(PORTRAIT), "--text", SHORT, "--emotion", "sadness"]
    assert main([*argv, "--intensity", "0.7", "--engine", "espeak-ng", "--seed", "3", "-o", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(out) and printed["portrait"] == str(PORTRAIT)
    assert printed["emotion_source"] == "given" and printed["speech"]["engine"] == "espeak-ng"
    assert printed["performance"]["emotion"] == {"sadness": 1.0} and printed["performance"]["intensity"] == 0.7
    assert printed["performance"]["reasons"] and printed["fps"] == FPS
    timing = printed["timing"]
    assert timing["render_fps"] > 0 and timing["total_seconds"] >= timing["render_seconds"] > 0
    check_mp4(out, printed["speech"]["seconds"], printed["frames"])


@pytest.mark.weights
def test_cli_reads_the_emotion_from_a_text_file_and_prints_the_chain_of_thought(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from affectlens.cli import main

    said = tmp_path / "reply.txt"
    said.write_text("Congratulations, that is wonderful news! I'm so happy for you.\n", encoding="utf-8")
    out = tmp_path / "happy.mp4"
    argv = ["generate", "talking-head", "--portrait", str(PORTRAIT), "--text-file", str(said)]
    assert main([*argv, "--engine", "espeak-ng", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote {out}: ") and "frames at 25 fps" in lines[0]
    assert lines[1].startswith("emotion: happiness") and lines[1].endswith("(read from the text)")
    assert lines[2].startswith("speech: espeak-ng")
    assert "chain of thought:" in lines
    reasons = lines[lines.index("chain of thought:") + 1 :]
    assert reasons and all(r.startswith("  - ") for r in reasons)
    assert any("exclamation" in r for r in reasons)  # the text's "!" reached the plan
    info = read_mp4_info(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.frames > 2 * FPS


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--portrait", "missing.jpg", "--text", SHORT], "missing.jpg: file not found"),
        (["--portrait", str(PORTRAIT), "--text", "   "], "the text to speak is empty"),
        (["--portrait", str(PORTRAIT), "--text-file", "absent.txt"], "absent.txt: no such file"),
        (["--portrait", str(PORTRAIT), "--text", SHORT, "--emotion", "smug"], "unknown emotion 'smug'"),
        (["--portrait", str(PORTRAIT), "--text", SHORT, "--intensity", "1.5"], "--intensity must be within [0, 1]"),
    ],
)
def test_cli_refuses_bad_input_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, extra: list[str], problem: str
) -> None:
    from affectlens.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.mp4"
    assert main(["generate", "talking-head", *extra, "--engine", "espeak-ng", "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and problem in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert captured.out == "" and not out.exists()


def test_cli_refuses_an_empty_text_file_and_a_non_video_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from affectlens.cli import main

    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    base = ["generate", "talking-head", "--portrait", str(PORTRAIT)]
    assert main([*base, "--text-file", str(empty), "-o", str(tmp_path / "a.mp4")]) == 1
    assert f"{empty}: the text to speak is empty" in capsys.readouterr().err
    assert main([*base, "--text", SHORT, "-o", str(tmp_path / "a.gif")]) == 1
    assert "must end in .mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --text and --text-file are one or the other
        main([*base, "--text", SHORT, "--text-file", str(empty), "-o", str(tmp_path / "a.mp4")])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.weights
def test_cli_names_the_portrait_with_no_face_or_not_an_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from affectlens.cli import main

    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(grey)
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    out = tmp_path / "out.mp4"
    for portrait, problem in ((grey, "no face"), (notes, "not a readable image")):
        argv = ["generate", "talking-head", "--portrait", str(portrait), "--text", SHORT, "--emotion", "sadness"]
        assert main([*argv, "--engine", "espeak-ng", "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {portrait}: ") and problem in err and "Traceback" not in err
    assert not out.exists()


# ---- the conversation ------------------------------------------------------------------------------------


def test_a_turns_face_comes_from_its_tree_and_a_crisis_reply_gets_a_calm_face() -> None:
    chat = conversation()
    sad = chat.send("I have my exam tomorrow and I am scared to fail.")
    mixture, intensity, source, why = _performance_inputs(sad)
    assert (mixture, intensity) == tree_performance_inputs(sad.tree) and mixture == {"sadness": 1.0}
    assert source == "tree" and "sadness" in why and safety_reply_reason(sad) is None
    crisis = chat.send(CRISIS)
    assert crisis.reply_source == "safety" and crisis.tree.safety and crisis.tree.safety["level"] == "crisis"
    mixture, intensity, source, why = _performance_inputs(crisis)
    assert (mixture, intensity, source) == (CALM_EMOTION, CALM_INTENSITY, "safety")
    assert "safety module" in why and "crisis" in why and "calm" in why


def test_talking_head_refuses_a_conversation_without_that_turn(tmp_path: Path) -> None:
    chat = conversation()
    with pytest.raises(AffectLensError, match="no turns yet"):
        chat.talking_head(PORTRAIT, tmp_path / "a.mp4")
    chat.send("Today was great, I went for a walk.")
    with pytest.raises(AffectLensError, match="no turn 3: the conversation has 1 turn"):
        chat.talking_head(PORTRAIT, tmp_path / "a.mp4", turn=3)
    with pytest.raises(AffectLensError, match="file not found"):
        chat.talking_head(tmp_path / "missing.jpg", tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.weights
def test_conversation_speaks_a_reply_with_its_trees_emotion(head, tmp_path: Path) -> None:
    chat = conversation()
    chat.animator = head
    first = chat.send("I have my exam tomorrow and I am scared to fail.")
    last = chat.send("Today was great, I went for a walk.")
    spoken = chat.talking_head(PORTRAIT, tmp_path / "last.mp4", engine="espeak-ng")  # default: the last turn
    assert spoken["turn"] == last.index == 1 and spoken["reply"] == last.reply
    assert spoken["emotion_source"] == "tree" and spoken["performance"]["emotion"] == {"happiness": 1.0}
    assert spoken["performance"]["intensity"] == pytest.approx(tree_performance_inputs(last.tree)[1], abs=1e-3)
    assert spoken["output"] == str(tmp_path / "last.mp4") and spoken["speech"]["engine"] == "espeak-ng"
    check_mp4(tmp_path / "last.mp4", spoken["speech"]["seconds"], spoken["frames"])
    earlier = chat.talking_head(PORTRAIT, tmp_path / "first.mp4", turn=first)
    assert earlier["turn"] == 0 and earlier["performance"]["emotion"] == {"sadness": 1.0}
    assert chat.animator is head  # built once, kept


@pytest.mark.weights
@pytest.mark.slow  # the crisis reply is long: about 15 s of speech to render
def test_a_crisis_reply_is_spoken_with_a_calm_face(head, tmp_path: Path, portrait: np.ndarray) -> None:
    chat = conversation()
    chat.animator = head
    chat.send("I have my exam tomorrow and I am scared to fail.")
    crisis = chat.send(CRISIS)
    spoken = chat.talking_head(portrait, tmp_path / "crisis.mp4", engine="espeak-ng")
    assert spoken["reply"] == crisis.reply and spoken["emotion_source"] == "safety"
    assert spoken["performance"]["emotion"] == CALM_EMOTION and spoken["performance"]["intensity"] == CALM_INTENSITY
    assert "safety module" in spoken["why"] and "calm" in spoken["why"]
    check_mp4(tmp_path / "crisis.mp4", spoken["speech"]["seconds"], spoken["frames"])


# ---- the demo --------------------------------------------------------------------------------------------


def test_demo_keeps_only_the_latest_videos(tmp_path: Path) -> None:
    from demo.app import KEEP_VIDEOS, _new_video

    made = []
    for k in range(KEEP_VIDEOS + 3):
        path = _new_video(str(tmp_path), "talking-head-")
        path.write_bytes(b"x" * k)
        made.append(path)
    left = sorted(tmp_path.glob("talking-head-*.mp4"))
    assert len(left) == KEEP_VIDEOS and made[-1] in left and made[0] not in left


@pytest.fixture(scope="module")
def demo() -> Iterator[Any]:
    from demo.app import build_demo

    built = build_demo(conversation().analyzer)  # tiny parts: only the talking head loads real weights
    try:
        yield built
    finally:
        built.affectlens_workdir.cleanup()


def endpoint(demo: Any, name: str) -> Callable[..., Any]:
    """The Python function behind the demo's ``api_name`` (called directly, no server)."""
    found = [f.fn for f in demo.fns.values() if f.api_name == name]
    assert len(found) == 1, f"no single endpoint /{name}"
    return found[0]


@pytest.mark.weights
def test_demo_talking_head_endpoint_returns_a_video(demo: Any, portrait: np.ndarray) -> None:
    import gradio as gr

    talking_head = endpoint(demo, "talking_head")
    video, summary, info = talking_head(portrait, SHORT, "sadness", 0.5, "espeak-ng")
    assert Path(video).is_file() and Path(video).parent == Path(demo.affectlens_workdir.name)
    check_mp4(Path(video), info["speech"]["seconds"], info["frames"])
    assert info["performance"]["emotion"] == {"sadness": 1.0} and info["performance"]["intensity"] == 0.5
    assert "**sadness 100%** at intensity 0.50 (chosen)" in summary and "**Chain of thought**" in summary
    assert info["performance"]["reasons"][0] in summary
    with pytest.raises(gr.Error, match="portrait"):
        talking_head(None, SHORT, "sadness", 0.5, "espeak-ng")
    with pytest.raises(gr.Error, match="no face"):
        talking_head(np.full((256, 256, 3), 128, np.uint8), SHORT, "sadness", 0.5, "espeak-ng")
    with pytest.raises(gr.Error, match="say"):
        talking_head(portrait, "  ", "sadness", 0.5, "espeak-ng")


@pytest.mark.weights
def test_demo_speaks_the_conversations_reply_once(demo: Any, head) -> None:
    speak_reply = endpoint(demo, "speak_reply")
    chat = conversation()
    chat.animator = head
    assert speak_reply(chat, True, None) == (None, None)  # no turn yet
    chat.send("Today was great, I went for a walk.")
    assert speak_reply(chat, False, None) == (None, None)  # not asked to speak
    video, spoken = speak_reply(chat, True, None)
    assert Path(video).is_file() and spoken == 0
    assert read_mp4_info(video).audio_codec == "aac"
    assert speak_reply(chat, True, spoken) == (None, 0)  # the same turn is not spoken twice

"""The Gradio demo, driven through its API endpoints with gradio_client against a live local server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from demo.samples import PORTRAIT
from tests.conftest import free_port

pytestmark = pytest.mark.weights


@pytest.fixture(scope="module")
def client(analyzer) -> Iterator[object]:
    from gradio_client import Client

    from demo.app import build_demo

    demo = build_demo(analyzer)
    port = free_port()
    demo.queue().launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True
    )
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


def test_image_endpoint_returns_an_annotated_face(client) -> None:
    from gradio_client import handle_file

    annotated, label, result, status = client.predict(handle_file(str(PORTRAIT)), api_name="/analyze_image")
    assert Path(annotated).is_file()
    assert label["label"] == "happiness"
    assert result["num_faces"] == 1
    assert "happiness" in status


def test_privacy_option_blurs_the_faces_in_the_output(client) -> None:
    import cv2
    from gradio_client import handle_file

    plain, _label, result, _status = client.predict(handle_file(str(PORTRAIT)), False, api_name="/analyze_image")
    hidden, label, _result, _status = client.predict(handle_file(str(PORTRAIT)), True, api_name="/analyze_image")
    x1, y1, x2, y2 = (
        int(v) + d for v, d in zip(result["frames"][0]["faces"][0]["box"], (10, 10, -10, -10), strict=True)
    )

    def detail(path: str) -> float:
        grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)[y1:y2, x1:x2].astype(np.float64)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())

    assert detail(hidden) < 0.3 * detail(plain) and label["label"] == "happiness"  # hidden pixels, same reading


def test_video_endpoint_returns_an_annotated_video(client, sample_video: Path) -> None:
    from gradio_client import handle_file

    video, label, result, _status = client.predict(handle_file(str(sample_video)), api_name="/analyze_video")
    path = video["video"] if isinstance(video, dict) else video
    assert Path(path).stat().st_size > 10_000
    assert label["label"] == "happiness" and result["kind"] == "video"


def test_bad_upload_gets_a_clear_message_not_a_crash(client, tmp_path: Path) -> None:
    from gradio_client import handle_file

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 2048)
    video, _label, _result, status = client.predict(handle_file(str(junk)), api_name="/analyze_video")
    assert video is None and status.startswith("Error:") and "junk.mp4" in status


def test_text_box_returns_emotion_and_salient_words(client) -> None:
    label, fine, words, result, _va = client.predict("I am so grateful and happy today", api_name="/analyze_text")
    assert label["label"] == "happiness"
    assert fine["label"] in ("gratitude", "joy")
    assert result["kind"] == "text" and result["utterances"][0]["text_emotion"]["salient_words"]
    assert words  # the highlighted words came back


def test_audio_tab_answers_for_a_clip_without_speech(client, tmp_path: Path) -> None:
    from gradio_client import handle_file

    from tests.test_analyzer_multimodal import _write_av

    tone = _write_av(tmp_path / "tone.m4a", video=False)
    _table, _label, result, status = client.predict(handle_file(str(tone)), api_name="/analyze_audio")
    assert result["kind"] == "audio" and result["utterances"] == []
    assert "no speech found" in status


def test_moment_tab_reads_a_photo_and_words_as_one_tree(client) -> None:
    from gradio_client import handle_file

    rendered, label, tree, _status = client.predict(
        handle_file(str(PORTRAIT)), None, "I got the job! I can't believe it, I'm so happy.", api_name="/analyze_moment"
    )
    assert rendered.startswith("Affective tree") and "reply" in rendered
    assert label["label"] == "happiness"  # a smiling face and glad words
    assert tree["emotion"]["value"]["label"] == "happiness"
    assert {s["kind"] for s in tree["sources"]} == {"image", "text"}
    empty = client.predict(None, None, "  ", api_name="/analyze_moment")
    assert empty[0] == "" and "Give a photo" in empty[3]


def test_conversation_tab_keeps_state_across_turns(client) -> None:
    history, tree, plan, affect, cleared, status = client.predict(
        [], "I failed my driving test again and I feel like an idiot.", None, None, api_name="/chat"
    )
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"]
    assert tree.startswith("Affective tree") and plan.startswith("- **") and cleared == ""
    history, tree, plan, affect, _cleared, status = client.predict(
        history, "I have another try next month.", None, None, api_name="/chat"
    )
    assert len(history) == 4  # the second turn joined the same conversation
    rows = affect["data"] if isinstance(affect, dict) else affect
    assert len(rows) == 6  # valence, arousal, dominance for each of the two turns
    assert "turn" in status or "mood" in status
    empty = client.predict(history, "   ", None, None, api_name="/chat")
    assert "Type a message" in empty[-1]


def test_create_tab_generates_reproducible_faces(client) -> None:
    gallery, info = client.predict("sadness", "(none)", 0.3, 7, 2, 3.0, api_name="/generate_image")
    assert len(gallery) == 2 and info["seeds"] == [7, 8] and info["emotion"] == {"sadness": 1.0}
    again, _ = client.predict("sadness", "(none)", 0.3, 7, 1, 3.0, api_name="/generate_image")
    first = gallery[0]["image"] if isinstance(gallery[0], dict) else gallery[0][0]
    repeat = again[0]["image"] if isinstance(again[0], dict) else again[0][0]
    from PIL import Image

    assert list(Image.open(first).getdata()) == list(Image.open(repeat).getdata())
    _gallery, mixed = client.predict("sadness", "anger", 0.4, 0, 1, 3.0, api_name="/generate_image")
    assert mixed["emotion"] == {"sadness": 0.6, "anger": 0.4}


def test_create_tab_edits_a_portrait(client) -> None:
    from gradio_client import handle_file

    edited, plan, status = client.predict(handle_file(str(PORTRAIT)), "surprise", 2.5, api_name="/edit_expression")
    assert Path(edited).is_file() and plan["target"] == "surprise" and "surprise" in status
    blank, _plan, error = client.predict(None, "surprise", 1.0, api_name="/edit_expression")
    assert blank is None and "portrait" in error


def test_create_tab_starts_at_the_judged_guidance(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Create tab's guidance slider starts where ``scripts/judge_emotion_diffusion.py`` chose it (the shipped
    ``model_index.json``), and at 3.0 with a warning when the shipped file cannot be found."""
    import json

    from affectlens import weights
    from affectlens.errors import WeightsError
    from demo.app import face_guidance_default

    index = Path(__file__).resolve().parents[1] / "weights" / "emotion-diffusion" / "model_index.json"
    assert face_guidance_default() == json.loads(index.read_text())["default_guidance"]

    def missing(name: str, path: object = None) -> object:
        raise WeightsError(f"{name}: nowhere")

    monkeypatch.setattr(weights, "locate", missing)
    assert face_guidance_default() == 3.0

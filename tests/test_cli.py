"""The command line as a user runs it: analyze, eval, weights, models, quickstart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from affectlens.cli import main
from demo.samples import PORTRAIT
from tests.conftest import validate

pytestmark = pytest.mark.weights


def test_analyze_astronaut_prints_happiness(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(PORTRAIT)]) == 0
    out = capsys.readouterr().out
    assert "1 face(s)" in out and "face #0" in out
    assert out.split("expression: ")[1].startswith("happiness")


def test_analyze_with_the_large_expression_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(PORTRAIT), "--json", "--expression-model", "affectlens-expression-large"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["label"] == "happiness"
    assert payload["models"]["expression"] == "affectlens-expression-large"
    assert payload["frames"][0]["faces"][0]["expression"]["model"] == "affectlens-expression-large"
    assert main(["analyze", str(PORTRAIT), "--expression-model", "no-such-model"]) != 0
    err = capsys.readouterr().err
    assert "no-such-model" in err and "affectlens-expression-large" in err  # names what is registered


def test_analyze_json_is_one_schema_valid_object(capsys: pytest.CaptureFixture[str], result_schema: dict) -> None:
    assert main(["analyze", str(PORTRAIT), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    validate(payload, result_schema)
    assert payload["summary"]["label"] == "happiness"


def test_analyze_text_tree_prints_every_stage_and_validates(
    analyzer, capsys: pytest.CaptureFixture[str], result_schema: dict
) -> None:
    sentence = "I lost my job today and I don't know how to tell my family."
    assert main(["analyze", "--text", sentence, "--tree"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert out.startswith("Affective tree for <text> (text)")
    for stage in ("attributes", "expressions", "emotion", "cause", "appraisal", "strategy", "reply"):
        assert f" {stage} [" in out
    assert "“I lost my job today" in out  # the cause quotes the sentence
    assert main(["analyze", "--text", sentence, "--tree", "--json"], analyzer=analyzer) == 0
    payload = json.loads(capsys.readouterr().out)
    validate(payload, result_schema)
    assert payload["kind"] == "text" and payload["tree"]["cause"]["value"]["observable"]


def test_analyze_text_in_crisis_gets_the_safety_reply(
    analyzer, capsys: pytest.CaptureFixture[str], result_schema: dict
) -> None:
    sentence = "Work was awful again. I don't want to be here anymore."
    assert main(["analyze", "--text", sentence, "--tree"], analyzer=analyzer) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("⚠ safety: crisis")
    assert "(safety) I'm really glad you told me" in out
    assert main(["analyze", "--text", sentence, "--tree", "--json"], analyzer=analyzer) == 0
    payload = json.loads(capsys.readouterr().out)
    validate(payload, result_schema)
    tree = payload["tree"]
    assert tree["safety"]["level"] == "crisis" and tree["safety"]["reply_overridden"]
    assert tree["reply"]["text_source"] == "safety" and tree["strategy"]["value"]["planner"] == "safety"


def test_analyze_writes_results_and_annotated_media(
    sample_video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["analyze", str(sample_video), str(PORTRAIT), "--fps", "2", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "astronaut.annotated.png", "astronaut.faces.csv", "astronaut.json",
        "sample.annotated.mp4", "sample.annotated.png", "sample.faces.csv", "sample.json",
    ]  # fmt: skip
    assert json.loads((out / "sample.json").read_text())["num_frames"] == 8
    import av

    with av.open(str(out / "sample.annotated.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 8
    assert "wrote" in capsys.readouterr().out


def test_analyze_reports_bad_files_and_keeps_going(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 10)
    code = main(["analyze", str(junk), str(PORTRAIT)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: {junk}:" in captured.err and "Traceback" not in captured.err
    assert "happiness" in captured.out  # the good file after the bad one was still analysed


def test_cli_subprocess_exit_codes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    proc = subprocess.run(
        [sys.executable, "-m", "affectlens.cli", "analyze", str(empty)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {empty}: empty file (0 bytes)"
    usage = subprocess.run([sys.executable, "-m", "affectlens.cli", "analyze"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_eval_json_maps_labels_and_reports_exclusions(
    tmp_path: Path, portrait: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    face = Image.fromarray(portrait[58:178, 181:270]).convert("L").resize((48, 48))
    for folder, count in (("happy", 3), ("calm", 2), ("contempt", 1)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            face.save(tmp_path / folder / f"{i}.png")
    assert main(["eval", "face-expression", "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"task", "n", "accuracy", "macro_f1", "weighted_f1", "per_class", "excluded"} <= set(report)
    assert report["task"] == "face-expression" and report["n"] == 3
    assert report["excluded"] == {"calm": 2, "contempt": 1}
    assert report["per_class"]["happiness"]["support"] == 3
    assert report["accuracy"] == 1.0


@pytest.mark.weights
def test_eval_face_expression_finds_the_face_in_photos_and_takes_crops_as_they_are(
    tmp_path: Path, portrait: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """By default each image is read as what it is: a small face crop whole, a photo by its largest face, a square
    image without a face as a crop, a frame of another shape without a face as an error."""
    from affectlens.evaluation import CROP_MAX_SIDE

    happy = tmp_path / "happy"
    happy.mkdir()
    Image.fromarray(portrait).save(happy / "photo.png")  # 512x512, the face about a sixth of the width
    Image.fromarray(portrait[58:178, 181:270]).convert("L").resize((48, 48)).save(happy / "crop.png")
    rng = np.random.default_rng(0)
    flat = rng.integers(100, 140, (CROP_MAX_SIDE + 72, CROP_MAX_SIDE + 72, 3), dtype=np.uint8)
    Image.fromarray(flat).save(happy / "square-no-face.png")
    Image.fromarray(rng.integers(100, 140, (360, 640, 3), dtype=np.uint8)).save(happy / "frame-no-face.png")

    def report(*options: str) -> dict:
        assert main(["eval", "face-expression", "--data", str(tmp_path), "--json", *options]) == 0
        return json.loads(capsys.readouterr().out)

    auto = report()
    assert auto["detect"] == "auto" and auto["framing"] == {"face": 1, "crop": 2}
    assert auto["errors"] == {"no_face": 1} and auto["n"] == 3
    always = report("--detect")  # the photo and the crop have a face a detector finds
    assert always["framing"] == {"face": 2} and always["errors"] == {"no_face": 2}
    never = report("--no-detect")
    assert never["detect"] == "never" and never["framing"] == {"crop": 4} and never["errors"] == {}
    for name in ("crop.png", "square-no-face.png", "frame-no-face.png"):
        (happy / name).unlink()
    photo = report()  # she smiles broadly: read from her face's crop, not from the whole photo
    assert photo["framing"] == {"face": 1} and photo["accuracy"] == 1.0


@pytest.mark.weights
def test_eval_text_emotion_finds_the_text_and_label_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Columns named text/label (or sentence/emotion, any case) need no flags; others are named with them."""
    rows = [("I am so happy and grateful for your help!", "joy"), ("This is wonderful news, I love it", "happy")]
    plain = tmp_path / "plain.csv"
    plain.write_text("Sentence,Emotion\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows))
    assert main(["eval", "text-emotion", "--data", str(plain), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 2 and report["per_class"]["happiness"]["support"] == 2 and report["accuracy"] == 1.0
    odd = tmp_path / "odd.tsv"
    odd.write_text("said\tfelt\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows))
    assert main(["eval", "text-emotion", "--data", str(odd)]) == 1
    assert (
        "no column named text or sentence or utterance or content; columns: said, felt (name one with --text-col)"
        in (capsys.readouterr().err)
    )
    assert (
        main(["eval", "text-emotion", "--data", str(odd), "--text-col", "said", "--label-col", "felt", "--json"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["n"] == 2
    assert main(["eval", "text-emotion", "--data", str(odd), "--text-col", "sad"]) == 1
    assert "no column 'sad'; columns: said, felt" in capsys.readouterr().err


def test_eval_on_a_folder_without_labels_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "misc").mkdir()
    assert main(["eval", "face-expression", "--data", str(tmp_path)]) == 1
    assert "no sub-folder is named after a known emotion label" in capsys.readouterr().err


def test_models_lists_every_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "face_detector: centerface (default), haar" in out
    assert "face_expression: affectlens-expression (default), affectlens-expression-large, fer-mini-xception" in out


def test_weights_list_shows_licences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "fer-mini-xception" in out and "licence: MIT" in out and "FER2013" in out


def test_quickstart_writes_and_prints_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], result_schema: dict
) -> None:
    assert main(["quickstart", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"results are in {tmp_path.resolve()}" in out
    payload = json.loads((tmp_path / "sample_face.json").read_text())
    validate(payload, result_schema)
    assert payload["num_faces"] == payload["num_frames"] == 20
    assert payload["summary"]["label"] == "happiness"
    assert (tmp_path / "sample_face.annotated.mp4").stat().st_size > 10_000

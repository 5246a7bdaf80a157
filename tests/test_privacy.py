"""Privacy mode: ``--blur-faces`` hides faces in what analyze and annotate write."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from affectlens import report as rep
from affectlens.annotate import AnnotateSettings, annotate_files, video_id
from affectlens.cli import main
from affectlens.visualize import blur_faces
from tests.test_analyzer_multimodal import _write_av
from tests.test_report import two_face_analyzer


def detail(image: np.ndarray) -> float:
    """Mean absolute Laplacian of the grey image: fine detail (what identifies a face)."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())


def test_blur_faces_hides_the_box_and_leaves_the_rest(portrait: np.ndarray) -> None:
    box = (180.0, 140.0, 330.0, 330.0)
    out = blur_faces(portrait, [box])
    x1, y1, x2, y2 = (int(v) for v in box)
    inner = np.s_[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20]
    assert detail(out[inner]) < 0.15 * detail(portrait[inner])
    # Far from the (grown) box nothing changes; an empty list changes nothing at all.
    assert np.array_equal(out[:80], portrait[:80]) and np.array_equal(out[:, :100], portrait[:, :100])
    assert np.array_equal(blur_faces(portrait, []), portrait)
    assert blur_faces(portrait[..., 0], [box]).shape == portrait.shape[:2]  # grey images too
    blur_faces(portrait, [(500.0, 500.0, 530.0, 530.0), (-20.0, -20.0, 5.0, 5.0)])  # boxes at or past the edge


def test_analyze_blur_faces_hides_faces_in_the_annotated_image(tmp_path: Path, portrait: np.ndarray) -> None:
    from demo.samples import PORTRAIT

    plain, hidden = tmp_path / "plain", tmp_path / "hidden"
    assert main(["analyze", str(PORTRAIT), "-o", str(plain)]) == 0
    assert main(["analyze", str(PORTRAIT), "-o", str(hidden), "--blur-faces"]) == 0
    shown = np.asarray(Image.open(plain / "astronaut.annotated.png").convert("RGB"))
    blurred = np.asarray(Image.open(hidden / "astronaut.annotated.png").convert("RGB"))
    found = [json.loads((d / "astronaut.json").read_text())["frames"][0]["faces"] for d in (plain, hidden)]
    x1, y1, x2, y2 = (int(v) for v in found[0][0]["box"])
    face = np.s_[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10]
    assert detail(blurred[face]) < 0.3 * detail(shown[face])
    assert np.array_equal(blurred[:40, :40], shown[:40, :40])
    # The results are the same: privacy hides pixels, not what was measured.
    assert [f["expression"] for f in found[0]] == [f["expression"] for f in found[1]]


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_av(tmp_path_factory.mktemp("privacy") / "talk.mp4", seconds=2.0)


def test_annotate_blur_faces_hides_faces_in_the_key_frames(talk: Path, tmp_path: Path) -> None:
    plain = annotate_files([talk], tmp_path / "plain", AnnotateSettings(fps=5), analyzer=two_face_analyzer())
    hidden = annotate_files(
        [talk], tmp_path / "hidden", AnnotateSettings(fps=5, blur_faces=True), analyzer=two_face_analyzer()
    )
    assert len(plain.done) == len(hidden.done) == 1
    folder = video_id(talk)
    shown = sorted((tmp_path / "plain" / folder / rep.KEYFRAMES).glob("*.jpg"))
    blurred = sorted((tmp_path / "hidden" / folder / rep.KEYFRAMES).glob("*.jpg"))
    assert shown and [p.name for p in shown] == [p.name for p in blurred]
    for a, b in zip(shown, blurred, strict=True):
        sharp, soft = (np.asarray(Image.open(p).convert("RGB")) for p in (a, b))
        h, w = sharp.shape[:2]
        centre = np.s_[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3]
        assert detail(soft[centre]) < 0.5 * detail(sharp[centre])
    # The setting belongs to the output folder: resuming it without the flag is refused like other settings.
    from affectlens.annotate import AnnotateError

    with pytest.raises(AnnotateError, match="blur_faces"):
        annotate_files([talk], tmp_path / "hidden", AnnotateSettings(fps=5), analyzer=two_face_analyzer())

"""Expression ratio images (generation.texture) and the talking head (generation.talking_head)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS, canonical_mixture
from generation.edit import AU_NAMES, FACS_PROTOTYPES, AUBasis
from generation.talking_head import (
    LEAD_IN,
    LIDS,
    TAIL,
    TalkingHead,
    blink_curve,
    gaze_path,
    head_motion,
    load_plans,
    load_shading_gains,
    plan_performance,
    rotate_points,
    text_cues,
)
from generation.texture import CanonicalFrame, ExpressionTexture

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "expression-edit"


# ---- texture -----------------------------------------------------------------------------------------------


def _grid_shape() -> np.ndarray:
    """A 468x2 stand-in for a face shape: a jittered grid (enough for triangulation and sampling)."""
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.linspace(-1, 1, 26), np.linspace(-1.2, 1.2, 18))
    return np.stack([xs.ravel(), ys.ravel()], 1) + rng.normal(0, 0.01, (468, 2))


def test_canonical_frame_samples_a_face_back_to_its_own_pattern() -> None:
    frame = CanonicalFrame.from_shape(_grid_shape(), size=64)
    assert frame.mask.mean() > 0.5
    # An image whose pixels encode their own x: sampling it at points scaled x2 must give 2 * canonical x.
    image = np.tile(np.arange(256, dtype=np.float32), (256, 1))
    out = frame.sample(image, frame.points * 2.0)
    xs = np.tile(np.arange(64, dtype=np.float32), (64, 1))
    inside = frame.mask
    assert np.abs(out[inside] - 2.0 * xs[inside]).max() < 1.0
    assert (out[~inside] == 0).all()


def test_texture_fit_finds_a_darker_region_and_shading_leaves_the_rest() -> None:
    frame = CanonicalFrame.from_shape(_grid_shape(), size=48)
    points = frame.points * 2.0  # faces drawn at twice the canonical size
    rng = np.random.default_rng(1)
    faces, labels = [], []
    for i in range(40):
        face = np.full((96, 96), 150.0) + rng.normal(0, 5, (96, 96))
        if i % 2:  # "anger" darkens a band across the brow
            face[30:40, :] *= 0.6
        faces.append(np.clip(face, 0, 255).astype(np.uint8))
        labels.append("anger" if i % 2 else "neutral")
    texture = ExpressionTexture.fit(frame, np.stack(faces), np.repeat(points[None], 40, 0), labels, smooth=0)
    ratio = texture.log_ratio["anger"]
    assert ratio[16:19, 10:38].mean() < -0.3  # the band (rows 30-40 of the 96-pixel face = 15-20 canonical)
    assert abs(ratio[30:40, 10:38].mean()) < 0.05
    assert set(texture.log_ratio) == {"neutral", "anger"} and not texture.log_ratio["neutral"].any()
    image = np.full((200, 200, 3), 150, np.uint8)
    face_points = frame.points * 2.0 + 40
    carried = texture.for_face(face_points, image.shape[:2])
    shaded = carried.shade(image, {"anger": 1.0})
    assert np.array_equal(carried.shade(image, {"anger": 0.0}), image)
    assert shaded[:35].tolist() == image[:35].tolist()  # above the face: untouched
    assert shaded[40 + 32 : 40 + 38, 70:130].mean() < 120  # the band landed on the face, darker
    # how much of the face sits at the shading's clip: nothing at no weight, more the stronger the weight
    assert carried.saturated_share({"anger": 0.0}) == 0.0
    assert carried.saturated_share({"anger": 1.0}) < carried.saturated_share({"anger": 10.0}) <= 1.0
    doubled = carried.log_shading({"anger": 2.0})
    assert doubled is not None and np.array_equal(doubled, 2.0 * carried.log_ratio["anger"])
    assert carried.log_shading({"anger": 0.0}) is None
    with pytest.raises(AffectLensError, match="neutral"):
        ExpressionTexture.fit(frame, np.stack(faces[:1]), points[None], ["anger"])


@pytest.mark.weights
def test_shipped_texture_round_trips_and_masks_the_mouth(tmp_path: Path) -> None:
    texture = ExpressionTexture.load()
    assert set(texture.log_ratio) == set(CANONICAL_EMOTIONS) and texture.card["gain"] > 0
    assert texture.card["test"]["shape + shading"]["mean"] > texture.card["test"]["shape only"]["mean"]
    again = ExpressionTexture.load(texture.save(tmp_path / "t.safetensors"))
    assert np.allclose(again.log_ratio["happiness"], texture.log_ratio["happiness"], atol=1e-3)
    mouth = texture.mouth_mask()
    lips = np.round(texture.frame.points[[13, 14]].mean(0)).astype(int)
    assert mouth[lips[1], lips[0]] > 0.99 and mouth[5, 5] == 0


# ---- the AU plan -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basis() -> AUBasis:
    return AUBasis.load(WEIGHTS / "au-basis.safetensors")


def test_plan_has_onset_apex_offset_and_a_readable_chain(basis: AUBasis) -> None:
    calm = dict.fromkeys(AU_NAMES, 0.2)
    perf = plan_performance("happiness", "It is so good to see you.", 3.0, 0.7, basis=basis, current_aus=calm)
    assert perf.num_frames == round((LEAD_IN + 3.0 + TAIL) * 25)
    assert perf.curves.shape == (perf.num_frames, 17)
    smile = perf.curve("AU12")
    assert smile[0] == 0 and smile.max() > 1.0
    apex = int(perf.apex[0] * 25) + 1
    assert np.allclose(smile[apex : int(perf.apex[1] * 25)], smile.max(), rtol=1e-3)  # held at the apex
    assert 0.4 * smile.max() < smile[-1] < 0.8 * smile.max()  # offset relaxes, does not snap back
    assert perf.level.min() >= 0 and perf.level.max() <= 1
    text = " ".join(perf.reasons)
    assert "AU12" in text and "onset" in text and "happiness" in text and "mouth" in text
    assert perf.to_dict()["targets"]["AU12"] > calm["AU12"]


def test_surprise_arrives_faster_than_sadness_and_intensity_scales(basis: AUBasis) -> None:
    fast = plan_performance("surprise", "Oh.", 2.0, 0.5, basis=basis)
    slow = plan_performance("sadness", "Oh.", 2.0, 0.5, basis=basis)
    assert fast.apex[0] - fast.onset[0] < slow.apex[0] - slow.onset[0]
    weak = plan_performance("sadness", "Oh.", 2.0, 0.1, basis=basis)
    assert np.abs(weak.curves).sum(1).max() < 0.9 * np.abs(slow.curves).sum(1).max()


def test_mixtures_blend_and_cues_move_the_brows(basis: AUBasis) -> None:
    mix = plan_performance({"happiness": 0.5, "surprise": 0.5}, "Really?", 2.0, 0.6, basis=basis)
    happy = plan_performance("happiness", "Really.", 2.0, 0.6, basis=basis)
    surprised = plan_performance("surprise", "Really.", 2.0, 0.6, basis=basis)
    k12 = AU_NAMES.index("AU12")
    apex = int(happy.apex[0] * 25) + 2
    h, su, m = happy.curves[apex, k12], surprised.curves[apex, k12], mix.curves[apex, k12]
    assert np.isclose(m, 0.5 * h + 0.5 * su, atol=1e-3) and min(h, su) + 0.5 < m < max(h, su) - 0.5
    assert mix.emotion == {"happiness": 0.5, "surprise": 0.5}
    assert mix.cues and mix.cues[0].kind == "question" and "question" in " ".join(mix.reasons)
    end = int(mix.cues[0].end * 25) - 5  # a question lifts the brows towards its end
    assert mix.curve("AU01")[end] > 0.5 * (happy.curve("AU01")[end] + surprised.curve("AU01")[end]) + 0.3
    cues = text_cues("Fine. Really? Wow!", 0.0, 3.0)
    assert [c.kind for c in cues] == ["question", "exclamation"] and cues[0].start < cues[1].start


def test_plan_and_mixture_errors(basis: AUBasis) -> None:
    with pytest.raises(AffectLensError, match="empty"):
        plan_performance("anger", "   ", 1.0, basis=basis)
    with pytest.raises(AffectLensError, match="at most"):
        plan_performance("anger", "a" * 1001, 1.0, basis=basis)
    with pytest.raises(AffectLensError, match="intensity"):
        plan_performance("anger", "Hi.", 1.0, 1.5, basis=basis)
    with pytest.raises(AffectLensError, match="emotion"):
        canonical_mixture("smug")
    with pytest.raises(AffectLensError, match="all zero"):
        canonical_mixture({"anger": 0.0})
    with pytest.raises(AffectLensError, match="non-negative"):
        canonical_mixture({"anger": -1.0})
    assert canonical_mixture({"happy": 1, "sad": 3}) == {"sadness": 0.75, "happiness": 0.25}


def test_natural_motion_is_small_and_seeded() -> None:
    rng = np.random.default_rng(3)
    blinks = blink_curve(500, 25.0, rng, breaks=[2.0])
    starts = np.flatnonzero((blinks[1:] > 0) & (blinks[:-1] == 0)) + 1
    assert 3 <= len(starts) <= 10 and blinks.max() == 1.0 and np.diff(starts).min() >= 25
    pose = head_motion(250, 25.0, np.random.default_rng(0), np.zeros(250))
    assert np.abs(pose).max() < 4.0 and np.abs(np.diff(pose, axis=0)).max() < 0.5
    nod = head_motion(250, 25.0, np.random.default_rng(0), np.ones(250))
    assert (nod[50:200, 1] - pose[50:200, 1]).mean() > 1.5
    gaze = gaze_path(500, 25.0, np.random.default_rng(0))
    assert np.abs(gaze).max() <= 0.12 and (np.abs(gaze).sum(1) == 0).mean() > 0.5
    assert np.array_equal(gaze, gaze_path(500, 25.0, np.random.default_rng(0)))
    pts = np.random.default_rng(0).normal(0, 50, (468, 3)) + 200
    assert np.allclose(rotate_points(pts, 0, 0, 0), pts[:, :2])
    turned = rotate_points(pts, 0, 0, 90)
    assert np.allclose(turned.mean(0), pts[:, :2].mean(0))


# ---- rendering ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head() -> TalkingHead:
    from generation.talking_head import build_talking_head

    return build_talking_head(engine="espeak-ng")


@pytest.mark.weights
def test_render_speaks_moves_the_face_and_keeps_the_background(
    head: TalkingHead, portrait: np.ndarray, tmp_path: Path
) -> None:
    from generation.video_out import read_mp4_info

    prepared = head.prepare(portrait)
    assert prepared.expression and max(prepared.expression, key=prepared.expression.__getitem__) == "happiness"
    video = head.perform(prepared, "Hello there. I am glad you came.", "surprise", 0.8, seed=1)
    assert video.speech.engine == "espeak-ng" and video.num_frames == video.performance.num_frames
    frames = list(video.frames())
    assert len(frames) == video.num_frames and frames[0].shape == portrait.shape
    x0, y0, x1, y1 = (int(v) for v in prepared.box)
    apex = int(video.performance.apex[0] * 25) + 2
    change = np.abs(frames[apex][y0:y1, x0:x1].astype(int) - portrait[y0:y1, x0:x1]).mean()
    assert change > 3.0
    for corner in (np.s_[:30, :30], np.s_[-30:, -30:]):
        assert all(np.array_equal(f[corner], portrait[corner]) for f in frames[::10])
    # The mouth follows the voice: the lower lip is lower on loud frames than on quiet ones.
    lead = round(LEAD_IN * 25)
    opening = np.zeros(video.num_frames)
    opening[lead : lead + len(video.mouth.open)] = video.mouth.open[: video.num_frames - lead]
    k25, k26 = AU_NAMES.index("AU25"), AU_NAMES.index("AU26")
    jaw = video.aus[:, k25] + video.aus[:, k26]
    assert np.corrcoef(jaw[lead:], opening[lead:])[0, 1] > 0.8
    blink = int(np.argmax(video.blinks))
    assert video.blinks[blink] == 1.0  # 3+ s of video hold at least one blink; it closes the lids
    upper, lower = (list(ids) for ids in LIDS[0])
    eye = prepared.points[upper + lower, :2]
    (ex0, ey0), (ex1, ey1) = eye.min(0).astype(int) - 2, eye.max(0).astype(int) + 3
    shut, before = frames[blink][ey0:ey1, ex0:ex1], frames[max(0, blink - 4)][ey0:ey1, ex0:ex1]
    assert np.abs(shut.astype(int) - before).mean() > 3.0
    out = tmp_path / "th.mp4"
    figures = video.write(out)
    info = read_mp4_info(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.frames == video.num_frames
    assert abs(info.duration - video.num_frames / 25) < 0.1 and figures["render_fps"] > 5
    data = video.to_dict()
    assert data["speech"]["engine"] == "espeak-ng" and data["performance"]["reasons"]


@pytest.mark.weights
def test_bad_portraits_get_clear_errors(head: TalkingHead, portrait: np.ndarray) -> None:
    with pytest.raises(AffectLensError, match="no face"):
        head.prepare(np.full((256, 256, 3), 128, np.uint8))
    with pytest.raises(AffectLensError, match="2 faces"):
        head.prepare(np.concatenate([portrait, portrait], axis=1))
    points, _ = head.editor.locate(portrait)
    a = np.radians(60.0)  # the face turned 60 degrees about the vertical axis: a profile
    centre = points.mean(0)
    turn = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    turned = (points - centre) @ turn.T + centre
    with pytest.raises(AffectLensError, match="profile"):
        head.prepare(portrait, turned)
    small = points.copy()
    small[:, :2] = (points[:, :2] - points[:, :2].mean(0)) * 0.15 + 100
    with pytest.raises(AffectLensError, match="too small"):
        head.prepare(portrait, small)
    with pytest.raises(AffectLensError, match="uint8"):
        head.prepare(portrait.astype(np.float32))


@pytest.mark.weights
def test_no_tts_engine_is_a_clear_error(
    head: TalkingHead, portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import generation.speech as speech

    monkeypatch.setattr(speech, "find_piper", lambda: None)
    monkeypatch.setattr(speech, "find_espeak", lambda: None)
    auto = TalkingHead(head.editor, head.texture, engine="auto")
    prepared = auto.prepare(portrait)
    with pytest.raises(AffectLensError, match="espeak"):
        auto.perform(prepared, "Hello.", "neutral")


def test_the_supporter_never_mirrors_anger() -> None:
    from types import SimpleNamespace

    from affectlens.tree import TreeNode
    from generation.talking_head import tree_performance_inputs

    def tree(probabilities: dict[str, float]) -> SimpleNamespace:
        return SimpleNamespace(emotion=TreeNode("emotion", {"probabilities": probabilities}, 0.9))

    angry, strength = tree_performance_inputs(tree({"anger": 0.9, "neutral": 0.1}))  # type: ignore[arg-type]
    assert "anger" not in angry and angry["neutral"] > angry["sadness"] > 0 and strength < 0.9
    happy, strength = tree_performance_inputs(tree({"happiness": 0.8, "neutral": 0.2}))  # type: ignore[arg-type]
    assert happy == {"happiness": 1.0} and strength == pytest.approx(0.8)


@pytest.mark.weights
def test_a_photos_open_mouth_is_painted_over_once(head: TalkingHead, portrait: np.ndarray) -> None:
    import cv2

    from generation.edit import INNER_LIPS

    prepared = head.prepare(portrait)  # the sample portrait smiles with her teeth showing
    inside = np.zeros(portrait.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(prepared.points[list(INNER_LIPS), :2]).astype(np.int32)], 1)

    def contrast(image: np.ndarray) -> float:  # teeth and the gaps between them: strong edges inside the lips
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F))[inside == 1].mean())

    assert contrast(prepared.image) < 0.3 * contrast(portrait)  # painted over from the lips around
    x0, y0 = (int(v) for v in prepared.box[:2])
    assert np.array_equal(prepared.image[:y0], portrait[:y0])  # nothing else changed
    assert np.array_equal(prepared.image[:, :x0], portrait[:, :x0])


@pytest.mark.weights
def test_a_shading_gain_strengthens_only_its_own_emotions_shading(head: TalkingHead, portrait: np.ndarray) -> None:
    stronger = TalkingHead(head.editor, head.texture, head.engine, plans=head.plans, shading_gains={"anger": 2.0})
    plain = TalkingHead(head.editor, head.texture, head.engine, plans=head.plans, shading_gains={})
    prepared = plain.prepare(portrait)
    assert prepared.texture is not None
    for emotion, differs in (("anger", True), ("sadness", False)):
        video = plain.perform(prepared, "Stop that now.", emotion, 0.8, seed=2)
        apex = int(video.performance.apex[0] * video.fps) + 1
        ours, theirs = plain.render_frame(video, apex), stronger.render_frame(video, apex)
        assert (not np.array_equal(ours, theirs)) is differs
        said = " ".join(stronger.perform(prepared, "Stop that now.", emotion, 0.8, seed=2).performance.reasons)
        assert (
            "shading fitted for a speaking face" in said
            and "anger's learned shading (FER2013 ratio images) at 2x" in said
        ) is differs
        assert np.array_equal(plain.render_frame(video, 0), stronger.render_frame(video, 0))  # at rest: no shading
    weights = plain.shading_weights(prepared, {"anger": 1.0}, 1.0, 0.8)
    doubled = stronger.shading_weights(prepared, {"anger": 1.0}, 1.0, 0.8)
    own = plain.shading_weights(prepared, {}, 1.0, 0.8).get("anger", 0.0)  # the photo's own anger, divided out
    assert doubled["anger"] - own == pytest.approx(2 * (weights["anger"] - own))
    assert prepared.texture.saturated_share(doubled) >= prepared.texture.saturated_share(weights)


# ---- the talking head's own prototypes (scripts/fit_talking_head_plans.py) -----------------------------------


def _script(name: str) -> Any:
    """A module of ``scripts/`` (``fit_talking_head_plans``, ``judge_talking_head``)."""
    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module(name)


def test_plan_performance_never_moves_the_blink(basis: AUBasis) -> None:
    from generation.talking_head import HELD_AUS

    assert HELD_AUS == ("AU45",)
    k45 = AU_NAMES.index("AU45")
    calm = dict.fromkeys(AU_NAMES, 0.2)
    hooded = {**calm, "AU45": 2.0}  # a photo whose eyes read as half closed (hooded lids, a smile's squint)
    for emotion in ("neutral", "happiness", "sadness", "disgust"):  # relaxed, raised, lowered, raised
        perf = plan_performance(emotion, "I am here.", 2.0, 0.8, basis=basis, current_aus=hooded)
        assert np.abs(perf.curves[:, k45]).max() == 0.0  # the blinks draw the lids; the basis's AU45 never moves
        assert "AU45" not in " ".join(perf.reasons)
        same = plan_performance(emotion, "I am here.", 2.0, 0.8, basis=basis, current_aus=calm)
        assert np.allclose(perf.curves, same.curves)  # the photo's eye closure changes nothing else either


def test_plan_performance_aims_at_the_prototypes_it_is_given(basis: AUBasis) -> None:
    assert basis.prototypes is not None
    no_brow = {**basis.prototypes.targets["anger"], "AU04": 0.0}
    own = basis.prototypes.with_targets("anger", no_brow)
    assert "AU04" not in own.raised["anger"] and "AU04" in basis.prototypes.raised["anger"]
    assert set(own.raised["anger"]) == set(basis.prototypes.raised["anger"]) - {"AU04"}  # the others keep their role
    unchanged = basis.prototypes.with_targets("anger", basis.prototypes.targets["anger"])
    assert unchanged == basis.prototypes
    assert basis.prototypes.targets["anger"]["AU04"] > 0  # the basis's copy is untouched
    k04 = AU_NAMES.index("AU04")
    calm = dict.fromkeys(AU_NAMES, 0.2)
    ordinary = plan_performance("anger", "Stop.", 2.0, 0.8, basis=basis, current_aus=calm)
    aimed = plan_performance("anger", "Stop.", 2.0, 0.8, basis=basis, current_aus=calm, prototypes=own)
    assert ordinary.curves[:, k04].max() > 1.0
    assert aimed.curves[:, k04].max() <= 1e-6  # the brow is no longer lowered...
    assert np.allclose(np.delete(aimed.curves, k04, 1), np.delete(ordinary.curves, k04, 1))  # ...nothing else moved
    assert "targets fitted for a speaking face" in " ".join(aimed.reasons)
    assert "targets fitted for a speaking face" not in " ".join(ordinary.reasons)


def test_shipped_talking_head_plans_change_only_what_their_search_adopted(basis: AUBasis) -> None:
    assert basis.prototypes is not None
    script = _script("fit_talking_head_plans")
    card = json.loads((WEIGHTS / "talking-plans.json").read_text())
    plans = load_plans(WEIGHTS / "talking-plans.json")
    assert plans.limits == basis.prototypes.limits
    assert plans.targets["neutral"] == basis.prototypes.targets["neutral"]  # the relaxed face is the basis's
    adopted = [e for e, row in card["emotions"].items() if row["adopted"]]
    assert adopted, "the search adopted nothing: ship the basis's prototypes instead"
    for emotion in CANONICAL_EMOTIONS[1:]:
        row = card["emotions"].get(emotion)
        if emotion not in adopted:
            assert plans.targets[emotion] == basis.prototypes.targets[emotion]
            continue
        assert plans.targets[emotion] != basis.prototypes.targets[emotion]
        gain = row["searched"]["check"]["agreement"] - row["basis"]["check"]["agreement"]
        assert gain >= card["search"]["adopt_gain"]
        # within FACS: an AU outside the emotion's prototype and companions never rises above the basis's target
        free = set(FACS_PROTOTYPES[emotion]) | set(script.COMPANIONS[emotion])
        for au in AU_NAMES:
            if au in script.FIXED:
                assert plans.targets[emotion][au] == basis.prototypes.targets[emotion][au]
            elif au not in free:
                assert plans.targets[emotion][au] <= basis.prototypes.targets[emotion][au] + 1e-6


def test_shipped_shading_gains_keep_within_their_bound_and_adoption_rule() -> None:
    script = _script("fit_talking_head_plans")
    card = json.loads((WEIGHTS / "talking-plans.json").read_text())
    gains = load_shading_gains(WEIGHTS / "talking-plans.json")
    search = card["shading_search"]
    assert gains == card["shading_gains"] and search["max_saturated"] == script.MAX_SATURATED
    for emotion, row in search["emotions"].items():
        chosen = next(entry for entry in row["grid"] if entry["gain"] == row["fitted_gain"])
        assert chosen["saturated"] <= search["max_saturated"]  # never beyond the glare bound
        for entry in row["grid"]:  # the fitted gain scored best on the fit faces among those within the bound
            if "fit" in entry:
                assert entry["fit"]["probability"] <= chosen["fit"]["probability"] + script.MIN_STEP
        if emotion in gains:
            assert row["adopted"] and gains[emotion] == row["fitted_gain"] != 1.0
            gain = row["fitted"]["check"]["agreement"] - row["gain_1"]["check"]["agreement"]
            assert gain >= card["search"]["adopt_gain"]
        else:  # kept at 1: it failed the rule, or passed it and was withheld, with the reason on the card
            assert not row["adopted"]
            if "withheld" in row:
                assert row["withheld"] == script.WITHHELD[emotion] and row["fitted_gain"] != 1.0


def test_plan_search_keeps_to_facs_and_climbs(basis: AUBasis) -> None:
    assert basis.prototypes is not None
    script = _script("fit_talking_head_plans")
    shipped = basis.prototypes.targets["anger"]
    grid = script.au_grid("anger", shipped, basis.prototypes.limits)
    assert not set(script.FIXED) & set(grid)
    assert max(grid["AU04"]) == pytest.approx(0.5 * basis.prototypes.limits["AU04"], abs=1e-3)  # FACS: free
    assert max(grid["AU12"]) <= shipped["AU12"] + 1e-6  # anger cannot borrow a smile
    # a separable score with its best values on the grid: the search finds them, and a large step finds nothing
    best = {au: values[len(values) // 2] for au, values in grid.items()}
    start = dict.fromkeys(grid, 0.0)

    def score(targets: dict[str, float]) -> float:
        return -sum((targets[au] - best[au]) ** 2 for au in grid)

    found, value, moves = script.coordinate_search(score, start, grid, sweeps=1)
    assert found == best and value == 0.0 and moves
    stuck, _, none = script.coordinate_search(score, start, grid, sweeps=1, min_step=1e9)
    assert stuck == start and not none


def test_load_plans_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AffectLensError, match="missing"):
        load_plans(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"targets": {}}))
    with pytest.raises(AffectLensError, match=r"bad\.json: not a talking-head plans file"):
        load_plans(bad)
    assert load_shading_gains(bad) == {}  # a plans file from before the shading gains: every gain 1
    with pytest.raises(AffectLensError, match="missing"):
        load_shading_gains(tmp_path / "nothing.json")
    for gains in ({"angry": 2.0}, {"anger": 0.0}, {"anger": 9.0}, {"anger": "strong"}, ["anger"]):
        bad.write_text(json.dumps({"shading_gains": gains}))
        with pytest.raises(AffectLensError, match=r"bad\.json"):
            load_shading_gains(bad)


@pytest.mark.weights
def test_the_judges_second_portrait_is_a_frontal_face_the_head_prepares(head: TalkingHead) -> None:
    judge_talking_head = _script("judge_talking_head")
    assert list(judge_talking_head.PORTRAITS) == ["astronaut", "hopper"]  # the sample portrait comes first
    image = judge_talking_head.PORTRAITS["hopper"][0]()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    prepared = head.prepare(image)
    x0, y0, x1, y1 = prepared.box
    assert abs(prepared.yaw) < 20  # frontal: the warp can animate her
    assert 0.25 < (x1 - x0) / image.shape[1] < 0.8 and (y0 + y1) / 2 < image.shape[0] / 2  # her face, upper half


@pytest.mark.weights
def test_with_engine_keeps_every_model_and_setting(head: TalkingHead) -> None:
    other = head.with_engine("piper")
    assert other is not head and other.engine == "piper" and head.engine == "espeak-ng"
    assert vars(other) == {**vars(head), "engine": "piper"}  # the same editor, texture, plans and settings

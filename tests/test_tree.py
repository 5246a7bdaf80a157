"""The affective tree: its types, JSON schema and rendering, and ``fusion.tree.build_tree`` on hand-made results."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from affectlens.errors import WeightsError
from affectlens.labels import CANONICAL_EMOTIONS, ESCONV_STRATEGIES
from affectlens.tree import STAGES, AffectTree, Evidence, TreeNode
from affectlens.types import (
    AU_COLUMNS,
    AnalysisResult,
    EmotionPrediction,
    FaceObservation,
    FaceQuality,
    FrameResult,
    GazeDirection,
    HeadPose,
    Prosody,
    TextEmotion,
    Utterance,
)
from fusion.late import FusedEmotion, LateFusion
from fusion.tree import AU_ACTIVE_THRESHOLD, CAUSE_UNOBSERVED_CONFIDENCE, RulePlanner, build_tree, second_person
from tests.conftest import validate

SAD_TEXT = "I lost my job today. The weather is fine. I don't know how to tell my family."


def _pred(label: str, p: float = 0.9, model: str = "tiny") -> EmotionPrediction:
    vector = np.full(len(CANONICAL_EMOTIONS), (1.0 - p) / (len(CANONICAL_EMOTIONS) - 1))
    vector[CANONICAL_EMOTIONS.index(label)] = p
    return EmotionPrediction.from_vector(vector, model)


def _aus(**active: float) -> dict[str, float]:
    return {au: active.get(au, 0.2) for au in AU_COLUMNS}


def _face(
    label: str = "happiness", p: float = 0.9, aus: dict[str, float] | None = None, **kw: object
) -> FaceObservation:
    args: dict = {
        "index": 0, "box": (10.0, 10.0, 60.0, 70.0), "detection_score": 0.9, "expression": _pred(label, p),
        "quality": FaceQuality(0.8, 50.0, 100.0, 0.9, 0.9, 0.95), "pose": HeadPose(6.0, -4.0, 1.0),
        "gaze": GazeDirection(2.0, 5.0), "aus": aus if aus is not None else _aus(AU12=2.5, AU06=1.5, AU04=0.6),
        "au_reference": "population",
    }  # fmt: skip
    args.update(kw)
    return FaceObservation(**args)


def image(*faces: FaceObservation, source: str = "photo.jpg") -> AnalysisResult:
    return AnalysisResult(source, "image", 100, 100, None, None, (FrameResult(0, 0.0, faces),), {"detector": "tiny"})


def video(label: str = "happiness") -> AnalysisResult:
    """Two tracked people over 6 frames: track 1 in every frame (the main face), track 2 in two."""
    frames = []
    for i in range(6):
        faces = [_face(label, track_id=1, aus=_aus(AU12=3.0 if i < 4 else 0.5, AU25=0.4))]
        if i < 2:
            faces.append(_face("neutral", 0.6, index=1, box=(70.0, 10.0, 90.0, 40.0), track_id=2))
        frames.append(FrameResult(i * 5, i * 0.5, tuple(faces)))
    return AnalysisResult("clip.mp4", "video", 100, 100, 10.0, 3.0, tuple(frames), {"detector": "tiny"})


def text(words: str = SAD_TEXT, label: str = "sadness", p: float = 0.9, salient: tuple = ()) -> AnalysisResult:
    salient = salient or (("lost", 0.4), ("job", 0.2), ("family", 0.1))
    emotion = TextEmotion(_pred(label, p), {"grief": 0.5}, salient)
    utterance = Utterance(0, 0.0, 0.0, words, None, emotion)
    return AnalysisResult("<text>", "text", None, None, None, None, (), {"text_emotion": "tiny"}, {}, (utterance,))


def audio(pitch: float = 300.0, rate: float = 6.5) -> AnalysisResult:
    prosody = Prosody(pitch_mean=pitch, pitch_range=5.0, energy=-22.0, speaking_rate=rate, pause_ratio=0.1)
    utterances = (
        Utterance(0, 0.5, 2.5, "I can't believe it", _pred("fear", 0.8), None, prosody),
        Utterance(1, 3.0, 4.0, None, _pred("fear", 0.7), None, prosody),
    )
    return AnalysisResult("note.m4a", "audio", None, None, None, 8.0, (), {"vad": "tiny"}, {}, utterances)


def _structure(tree: AffectTree) -> list[tuple]:
    return [(n.stage, n.value, n.confidence, n.evidence) for n in tree.nodes]


@pytest.fixture(scope="module")
def fuser() -> LateFusion:
    return LateFusion()  # the untrained prior: fixed, needs no weights


def test_text_only_tree_quotes_the_sentences_with_the_salient_words(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(text(), fuser=fuser)
    assert tree.attributes.value["words"] == {"texts": 1, "words": 17, "typed": True}
    assert tree.attributes.value["main_face"] is None and tree.attributes.value["voice"] is None
    assert [w["word"] for w in tree.expressions.value["salient_words"]] == ["lost", "job", "family"]
    emotion = tree.emotion.value
    assert (
        emotion["state"] == "sadness" and emotion["agreement"] == "single" and emotion["modalities"].keys() == {"text"}
    )
    cause = tree.cause.value
    assert cause["observable"] and cause["emotion"] == "sadness" and cause["basis"] == "salient words"
    # the weather sentence has no salient word: it is not the cause; the rest stay in reading order
    assert [s["text"] for s in cause["sentences"]] == ["I lost my job today.", "I don't know how to tell my family."]
    assert cause["trigger_words"] == ["lost", "job", "family"]
    assert tree.appraisal.value == {
        "emotion": "sadness", "need": "comfort and being heard", "tentative": False, "cause_observable": True
    }  # fmt: skip
    assert tree.appraisal.confidence == tree.emotion.confidence
    strategies = [s["strategy"] for s in tree.strategy.value["strategies"]]
    assert strategies == ["Reflection of feelings", "Affirmation and Reassurance"]
    assert tree.reply.text and "feeling sad" in tree.reply.text and tree.reply.text_source == "template"
    assert all(n.text_source in ("template", None) for n in tree.nodes)
    assert tree.sources == (("<text>", "text"),)
    validate(tree.to_dict(), tree_schema)


def test_image_only_tree_names_active_aus_and_cannot_see_a_cause(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(image(_face()), fuser=fuser)
    attributes = tree.attributes.value
    assert attributes["faces"]["count"] == 1 and attributes["voice"] is None and attributes["words"] is None
    assert attributes["main_face"]["head_pose"] == {"yaw": 6.0, "pitch": -4.0, "roll": 1.0}
    assert attributes["main_face"]["gaze"] == {"yaw": 2.0, "pitch": 5.0}
    aus = tree.expressions.value["action_units"]
    assert [(a["au"], a["name"]) for a in aus] == [("AU12", "lip corner puller"), ("AU06", "cheek raiser")]
    assert all(a["intensity"] >= AU_ACTIVE_THRESHOLD for a in aus)  # AU04 at 0.6 is under the threshold
    assert tree.expressions.value["facial_expression"]["label"] == "happiness"
    face_cues = [e for e in tree.expressions.evidence if e.modality == "face"]
    assert face_cues[0].frames == (0, 0) and face_cues[0].start is None  # an image: a frame, no time
    assert tree.emotion.value["state"] == "happiness"
    assert not tree.cause.value["observable"] and tree.cause.confidence == CAUSE_UNOBSERVED_CONFIDENCE
    assert "not observable from the scene alone" in (tree.cause.text or "")
    assert any(s["strategy"] == "Question" for s in tree.strategy.value["strategies"])
    validate(tree.to_dict(), tree_schema)


def test_video_tree_follows_the_main_track_with_frame_ranges(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(video(), fuser=fuser)
    faces = tree.attributes.value["faces"]
    assert faces == {"count": 2, "observations": 8, "tracks": 2, "frames": 6, "frames_with_faces": 6}
    main = tree.attributes.value["main_face"]
    assert main["track_id"] == 1 and main["observations"] == 6
    (au,) = tree.expressions.value["action_units"]
    assert au["au"] == "AU12" and au["active_share"] == pytest.approx(4 / 6, abs=1e-3)
    cue = next(e for e in tree.expressions.evidence if e.cue.startswith("AU12"))
    assert cue.frames == (0, 15) and (cue.start, cue.end) == (0.0, 1.5)  # active in the first four frames
    validate(tree.to_dict(), tree_schema)


def test_audio_only_tree_describes_the_voice(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(audio(), fuser=fuser)
    voice = tree.attributes.value["voice"]
    assert voice["utterances"] == 2 and voice["speech_seconds"] == 3.0 and voice["duration"] == 8.0
    assert voice["voice_activity"] == pytest.approx(3 / 8)
    tone = tree.expressions.value["vocal_tone"]
    assert tone["label"] == "fear" and tone["descriptors"] == ["raised pitch", "fast"]
    assert tree.emotion.value["state"] == "fear" and tree.emotion.value["modalities"].keys() == {"voice"}
    voice_cue = next(e for e in tree.emotion.evidence if e.modality == "voice")
    assert (voice_cue.start, voice_cue.end) == (0.5, 4.0)
    # the transcript has no text emotion here: nothing to quote
    assert not tree.cause.value["observable"]
    assert tree.appraisal.value["need"] == "safety and reassurance"
    validate(tree.to_dict(), tree_schema)


def test_face_and_words_in_conflict_is_recorded_as_a_cue(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree([image(_face("happiness", 0.9)), text()], fuser=fuser)
    emotion = tree.emotion.value
    assert emotion["agreement"] == "conflict"
    assert emotion["conflicts"] == [{"modalities": ["face", "text"], "labels": ["happiness", "sadness"]}]
    assert {m: d["label"] for m, d in emotion["modalities"].items()} == {"face": "happiness", "text": "sadness"}
    conflict = [e for e in tree.emotion.evidence if e.cue.startswith("conflict")]
    assert len(conflict) == 1 and "happiness" in conflict[0].cue and "sadness" in conflict[0].cue
    assert "differ" in (tree.emotion.text or "")
    assert tree.strategy.value["strategies"][0]["strategy"] == "Question"
    assert tree.sources == (("photo.jpg", "image"), ("<text>", "text"))
    validate(tree.to_dict(), tree_schema)


def test_modalities_that_agree_are_said_to_agree(fuser: LateFusion) -> None:
    tree = build_tree([image(_face("sadness", 0.8)), text()], fuser=fuser)
    assert tree.emotion.value["agreement"] == "agree" and tree.emotion.value["conflicts"] == []
    assert tree.emotion.value["state"] == "sadness"


def test_low_top_probability_abstains(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(text("Hmm, well, okay.", "sadness", 0.3, (("okay", 0.05),)), fuser=fuser)
    emotion = tree.emotion.value
    assert emotion["uncertain"] and emotion["state"] == "uncertain" and emotion["label"] == "sadness"
    assert tree.emotion.confidence < fuser.config.abstain_below
    assert tree.appraisal.value["tentative"]
    plan = tree.strategy.value["strategies"]
    assert plan[0]["strategy"] == "Question" and plan[1]["strategy"] == "Reflection of feelings"
    assert "?" in (tree.reply.text or "")
    assert "clear enough" in (tree.emotion.text or "")
    validate(tree.to_dict(), tree_schema)


def test_a_given_fused_emotion_is_used_as_is() -> None:
    probs = dict.fromkeys(CANONICAL_EMOTIONS, 0.1) | {"anger": 0.4}
    fused = FusedEmotion(probs, -0.5, 0.6, {"text": 1.0}, False, "my-fusion")
    tree = build_tree(text(), fused=fused)
    assert tree.emotion.value["state"] == "anger" and tree.models["fuser"] == "my-fusion"
    assert tree.appraisal.value["need"] == "acknowledgement and fairness"


def test_nothing_observed_still_gives_a_valid_tree(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(image(), fuser=fuser)
    assert tree.emotion.value["label"] is None and tree.emotion.confidence == 0.0
    assert tree.attributes.confidence == 0.0
    assert any("no face, voice or words" in w for w in tree.warnings)
    assert any(e.modality == "scene" and "no face" in e.cue for e in tree.attributes.evidence)
    assert tree.strategy.value["strategies"][0]["strategy"] == "Question"
    validate(tree.to_dict(), tree_schema)


def test_render_is_readable_and_has_every_stage(fuser: LateFusion) -> None:
    tree = build_tree([image(_face("happiness", 0.9)), text()], fuser=fuser)
    rendered = tree.render()
    for stage in STAGES:
        assert f" {stage} [" in rendered
    assert rendered.splitlines()[0] == "Affective tree for photo.jpg (image), <text> (text)"
    assert "AU12 lip corner puller" in rendered and "conflict" in rendered
    flat = " ".join(rendered.replace("│", " ").split())  # the prose, unwrapped
    assert "“I lost my job today.”" in flat and str(tree.reply.text) in flat
    assert "models: fuser=late-fusion" in rendered


def test_round_trip_through_json(fuser: LateFusion) -> None:
    for results in (text(), image(_face()), video(), audio(), [image(_face()), audio(), text()]):
        tree = build_tree(results, fuser=fuser)
        assert AffectTree.from_dict(tree.to_dict()) == tree
        assert AffectTree.from_json(tree.to_json()) == tree
        assert json.loads(tree.to_json()) == tree.to_dict()


def test_every_input_kind_validates_against_the_schema(fuser: LateFusion, tree_schema: dict) -> None:
    import jsonschema

    tree = build_tree([video(), audio(), text()], fuser=fuser)
    validate(tree.to_dict(), tree_schema)
    bad = tree.to_dict()
    bad["strategy"]["value"]["strategies"][0]["strategy"] = "Flattery"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, tree_schema)
    bad = tree.to_dict()
    bad["emotion"]["stage"] = "reply"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad, tree_schema)


class NonsenseWriter:
    name = "nonsense"

    def write(self, tree: AffectTree, results=()) -> dict[str, str]:
        return {
            k: "Purple monkeys dishwasher; the emotion is anger (100%)." for k in ("cause", "appraisal", "rationale")
        } | {
            "reply": "Bananas.",
            "strategy": "Self-disclosure",  # not a key a writer may set: ignored
        }


def test_a_nonsense_writer_changes_no_structured_value(fuser: LateFusion, tree_schema: dict) -> None:
    results = [image(_face("happiness", 0.9)), text()]
    plain = build_tree(results, fuser=fuser)
    written = build_tree(results, fuser=fuser, writer=NonsenseWriter())
    assert _structure(written) == _structure(plain)
    assert written.cause.text_source == written.appraisal.text_source == "lm:nonsense"
    assert written.emotion.text_source == written.reply.text_source == "lm:nonsense"
    assert written.rationale == "Purple monkeys dishwasher; the emotion is anger (100%)."
    assert written.reply.text == "Bananas." and written.reply.value["template"] == plain.reply.text
    assert written.strategy.text == plain.strategy.text and written.strategy.text_source == "template"
    assert written.models["writer"] == "nonsense" and plain.models["writer"] is None
    validate(written.to_dict(), tree_schema)


def test_a_failing_or_impersonating_writer_leaves_the_templates(fuser: LateFusion) -> None:
    class Broken:
        name = "broken"

        def write(self, tree: AffectTree, results=()) -> dict[str, str]:
            raise RuntimeError("out of memory")

    class Impersonator:
        name = "human"

        def write(self, tree: AffectTree, results=()) -> dict[str, str]:
            return {"reply": "As a human, I know exactly how you feel.", "cause": "  "}

    plain = build_tree(text(), fuser=fuser)
    broken = build_tree(text(), fuser=fuser, writer=Broken())
    assert [n.text for n in broken.nodes] == [n.text for n in plain.nodes]
    assert any("broken failed" in w and "out of memory" in w for w in broken.warnings)
    human = build_tree(text(), fuser=fuser, writer=Impersonator())
    assert human.reply.text == plain.reply.text and human.reply.text_source == "template"
    assert any("claimed to be a person" in w for w in human.warnings)
    assert human.cause.text == plain.cause.text


def test_the_planner_is_pluggable_and_checked(fuser: LateFusion) -> None:
    seen: list[AffectTree] = []

    def planner(tree: AffectTree) -> list[tuple[str, str, float]]:
        seen.append(tree)
        return [("Providing Suggestions", "they asked for advice", 0.7), ("Information", "facts help", 0.4)]

    tree = build_tree(text(), fuser=fuser, planner=planner)
    assert seen[0].strategy.value is None and seen[0].reply.value is None  # still pending when planning
    assert seen[0].appraisal.value["need"] == "comfort and being heard"
    assert tree.strategy.value["strategies"][0] == {
        "strategy": "Providing Suggestions", "why": "they asked for advice", "confidence": 0.7
    }  # fmt: skip
    assert tree.strategy.value["planner"] == "planner" and tree.strategy.confidence == 0.7
    assert "small next step" in (tree.reply.text or "")
    with pytest.raises(ValueError, match="unknown ESConv strategy 'Flattery'; valid: Question"):
        build_tree(text(), fuser=fuser, planner=lambda tree: [("Flattery", "", 1.0)])


def test_the_restatement_says_a_sentence_back_never_a_fragment(fuser: LateFusion) -> None:
    def restate(tree: AffectTree) -> list[tuple[str, str, float]]:
        return [("Restatement or Paraphrasing", "say it back", 0.6)]

    said = build_tree(text("I lost my job today.", salient=(("lost", 0.4),)), fuser=fuser, planner=restate)
    assert said.reply.text == "If I understand you right, you're saying that you lost your job today."
    plain = build_tree(text("The whole team was let go today.", salient=(("let", 0.4),)), fuser=fuser, planner=restate)
    # no "I": said back as it is
    assert plain.reply.text == "If I understand you right, you're saying that the whole team was let go today."
    that = build_tree(
        text("That was well within his limits.", salient=(("limits", 0.4),)), fuser=fuser, planner=restate
    )
    assert "you're saying" not in (that.reply.text or "")  # "That was ..." points back: not said back
    # their own harsh words about themselves stay in quotes (unquoted, they would read as the reply's judgement)
    harsh = build_tree(text("My dad says I'm useless.", salient=(("useless", 0.4),)), fuser=fuser, planner=restate)
    assert "this is about “My dad says I'm useless”" in (harsh.reply.text or "")
    # a misheard voice note's one word ("Kit") is not something the person said worth saying back
    fragment = build_tree(text("Kit.", salient=(("Kit", 0.4),)), fuser=fuser, planner=restate)
    assert "this is about" not in (fragment.reply.text or "") and fragment.reply.text


def test_second_person_turns_what_they_said_to_you() -> None:
    assert second_person("I studied so hard and I still panicked.") == "you studied so hard and you still panicked"
    assert second_person("I was scared and I am still shaking!") == "you were scared and you are still shaking"
    assert second_person("But it means moving away from my friends.") == "it means moving away from your friends"
    assert second_person("I’m tired of myself") == "you're tired of yourself"
    assert second_person("It's the third time.") is None  # no first person
    assert second_person("You're the only one I can talk to.") is None  # it addresses the assistant
    assert second_person("Was he high when he was driving my daughter?") is None  # a question is not restated
    assert second_person("should i tell my husband about this") is None


def test_the_rule_planner_only_chooses_esconv_strategies_and_never_self_disclosure(fuser: LateFusion) -> None:
    from fusion.tree import _REPLY_ORDER

    assert sorted(_REPLY_ORDER) == sorted(ESCONV_STRATEGIES)  # every strategy has a place in a reply
    for label in CANONICAL_EMOTIONS:
        for p in (0.9, 0.25):
            tree = build_tree([image(_face(label, 0.9)), text(label=label, p=p)], fuser=fuser)
            plan = RulePlanner()(tree)
            assert plan and all(s in ESCONV_STRATEGIES and s != "Self-disclosure" for s, _, _ in plan)
            assert tree.reply.text and "human" not in tree.reply.text.lower()


def test_without_fitted_fusion_the_prior_is_used_and_noted(monkeypatch: pytest.MonkeyPatch) -> None:
    import fusion.tree

    def missing(path: object = None) -> LateFusion:
        raise WeightsError("unknown weight 'late-fusion'")

    monkeypatch.setattr(fusion.tree, "load_late_fusion", missing)
    fuser = fusion.tree.late_fuser()
    assert isinstance(fuser, LateFusion) and fuser.config.fitted_on == "untrained prior"
    tree = build_tree(text())
    assert tree.models["fuser"] == "late-fusion"
    assert any("untrained late-fusion prior" in w for w in tree.warnings)


def test_a_multimodal_result_is_read_through_its_parts(fuser: LateFusion) -> None:
    parts = (image(_face()), text())
    combined = AnalysisResult(
        "photo.jpg + <text>", "multimodal", None, None, None, None,
        tuple(f for p in parts for f in p.frames), {}, {}, tuple(u for p in parts for u in p.utterances), parts=parts,
    )  # fmt: skip
    assert build_tree(combined, fuser=fuser) == build_tree(list(parts), fuser=fuser)


def test_nodes_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="confidence must be in"):
        TreeNode("cause", {}, 1.5)
    with pytest.raises(ValueError, match="unknown stage"):
        TreeNode("mood", {}, 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON-able"):
        TreeNode("cause", {"x": np.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="text and text_source"):
        TreeNode("cause", {}, 0.5, text="why")
    with pytest.raises(ValueError, match="unknown evidence modality"):
        Evidence("smell", "roses")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ends before it starts"):
        Evidence("voice", "a", start=2.0, end=1.0)
    node = TreeNode("cause", {"words": ("a", "b")}, np.float32(0.123456))
    assert node.value == {"words": ["a", "b"]} and node.confidence == 0.1235
    tree = build_tree(text(), fuser=LateFusion())
    with pytest.raises(ValueError, match=r"AffectTree\.cause must be a TreeNode of stage 'cause'"):
        dataclasses.replace(tree, cause=tree.reply)
    with pytest.raises(ValueError, match="unknown affective tree fields"):
        AffectTree.from_dict(tree.to_dict() | {"mood": 1})


# ---- safety -------------------------------------------------------------------------------------------------------


def test_a_crisis_replaces_the_plan_and_the_reply(fuser: LateFusion, tree_schema: dict) -> None:
    words = "Work was awful again. I don't want to be here anymore."
    tree = build_tree(text(words, salient=(("awful", 0.3),)), fuser=fuser, locale="en_GB")
    safety = tree.safety
    assert safety is not None and safety["level"] == "crisis" and safety["reply_overridden"]
    assert safety["categories"] == ["suicidal_ideation"] and safety["score"] >= 0.8
    (cue,) = safety["cues"]
    assert words[cue["start"] : cue["end"]] == cue["phrase"] == "don't want to be here anymore"
    plan = tree.strategy.value["strategies"]
    assert [s["strategy"] for s in plan] == ["Affirmation and Reassurance", "Information", "Question"]
    assert tree.strategy.value["planner"] == "safety" and all(s["why"].startswith(safety["why"]) for s in plan)
    assert tree.strategy.evidence == tree.reply.evidence and tree.reply.evidence[0].value["rule"] == "not_want_to_live"
    assert tree.reply.text_source == "safety" and tree.reply.value["template"] == tree.reply.text
    assert "999" in tree.reply.text and "116 123" in tree.reply.text and "I'm an AI" in tree.reply.text
    assert tree.emotion.value["state"] == "sadness"  # the rest of the tree is read as usual
    rendered = tree.render()
    assert rendered.splitlines()[1].startswith("⚠ safety: crisis [")
    assert "(safety) " in rendered and "reply is the safety module's" in " ".join(rendered.split())
    assert AffectTree.from_dict(tree.to_dict()) == tree
    validate(tree.to_dict(), tree_schema)


def test_a_writer_cannot_override_a_crisis_reply(fuser: LateFusion, tree_schema: dict) -> None:
    results = text("He said he'd hurt me if I tell anyone.", "fear", salient=(("hurt", 0.4),))
    plain = build_tree(results, fuser=fuser)
    written = build_tree(results, fuser=fuser, writer=NonsenseWriter())
    assert plain.safety and plain.safety["categories"] == ["harm_from_others"]
    assert "somewhere safe" in (plain.reply.text or "")
    assert written.reply.text == plain.reply.text and written.reply.text_source == "safety"
    assert written.cause.text_source == "lm:nonsense"  # the other prose is still the writer's
    assert any("reply ignored: the safety module's reply stands (crisis)" in w for w in written.warnings)
    validate(written.to_dict(), tree_schema)


def test_a_concern_keeps_the_plan_and_checks_in(fuser: LateFusion, tree_schema: dict) -> None:
    words = "I lost my job today. Honestly I'm just so tired of everything."
    tree = build_tree(text(words), fuser=fuser)
    assert tree.safety and tree.safety["level"] == "concern" and not tree.safety["reply_overridden"]
    assert tree.strategy.value["planner"] == "esconv-rules" and tree.reply.text_source == "template"
    assert (tree.reply.text or "").endswith("are you safe right now?")
    assert tree.reply.value["template"] == tree.reply.text
    # a writer's reply is kept, with the same check-in
    written = build_tree(text(words), fuser=fuser, writer=NonsenseWriter())
    assert (
        written.reply.text
        == "Bananas. I want to gently check in, too: how are you holding up, and are you safe right now?"
    )
    # an earlier note raises the same words to a crisis
    raised = build_tree(text(words), fuser=fuser, history=["I've written a note."])
    assert raised.safety and raised.safety["level"] == "crisis" and raised.reply.text_source == "safety"
    assert any(e.modality == "dialogue" and "earlier turn 0" in e.cue for e in raised.reply.evidence)
    validate(raised.to_dict(), tree_schema)


def test_over_attachment_gets_an_honest_boundary(fuser: LateFusion) -> None:
    tree = build_tree(text("You're the only one I can talk to. I love you, don't leave me.", "happiness"), fuser=fuser)
    assert tree.safety and tree.safety["level"] == "concern" and tree.safety["categories"] == ["attachment"]
    assert tree.reply.text_source == "safety" and "I'm an AI, not a person" in (tree.reply.text or "")
    assert tree.strategy.value["planner"] == "safety"


def test_after_a_crisis_a_calm_answer_gets_a_follow_up_not_the_boundary_again(fuser: LateFusion) -> None:
    history = [
        "Honestly you're the only one I can talk to these days.",
        "Sometimes I think everyone would be better off without me.",
    ]
    tree = build_tree(text("I'm at home. My sister is in the next room.", "neutral"), fuser=fuser, history=history)
    assert tree.safety and tree.safety["level"] == "concern" and tree.safety["reply_overridden"]
    reply = tree.reply.text or ""
    assert "not a person" not in reply  # the attachment was answered on its own turn
    assert "988" in reply and "How are you feeling right now?" in reply and "Are you safe right now?" not in reply
    assert [s["strategy"] for s in tree.strategy.value["strategies"]] == [
        "Affirmation and Reassurance",
        "Providing Suggestions",
        "Question",
    ]
    # attachment said again now is answered again
    again = build_tree(text("You're the only one I can talk to.", "neutral"), fuser=fuser, history=history)
    assert "I'm an AI, not a person" in (again.reply.text or "")
    # new risk words on this turn are not a follow-up
    fresh = build_tree(text("I still want to disappear forever.", "sadness"), fuser=fuser, history=history)
    assert "Thank you for telling me, and for staying in touch." not in (fresh.reply.text or "")


def test_later_follow_ups_are_shorter_and_do_not_repeat(fuser: LateFusion) -> None:
    """The turns after a disclosure: the full follow-up first, then shorter ones that end on different questions;
    each keeps the crisis line and the emergency number; after ``HISTORY_TURNS`` turns the planner answers again."""
    history = ["Sometimes I think everyone would be better off without me."]
    replies = []
    for said in ("I'm at home.", "My sister is in the next room.", "We watched a film.", "It was a comedy."):
        tree = build_tree(text(said, "neutral"), fuser=fuser, history=history)
        replies.append(tree.reply.text or "")
        history.append(said)
    first, second, third, after = replies
    assert first.startswith("Thank you for telling me, and for staying in touch.")
    assert second.startswith("Thank you for staying in touch.") and len(second) < len(first)
    assert second != third and second.split(". ")[:-1] == third.split(". ")[:-1]  # the same but its last question
    for reply in (first, second, third):
        assert "988" in reply and "emergency number" in reply and "Are you safe right now?" not in reply
    assert "988" not in after and tree.reply.text_source != "safety"


def test_a_manipulative_writer_reply_is_refused(fuser: LateFusion) -> None:
    class Clingy:
        name = "clingy"

        def write(self, tree: AffectTree, results=()) -> dict[str, str]:
            return {"reply": "Only I understand you. Don't tell anyone about this, it stays between us."}

    plain = build_tree(text(), fuser=fuser)
    clingy = build_tree(text(), fuser=fuser, writer=Clingy())
    assert clingy.reply.text == plain.reply.text and clingy.reply.text_source == "template"
    (warning,) = [w for w in clingy.warnings if "clingy" in w]
    assert "failed the safety check" in warning and "fostered dependence" in warning and "asked for secrecy" in warning


def test_without_words_the_safety_record_says_none(fuser: LateFusion, tree_schema: dict) -> None:
    tree = build_tree(image(_face()), fuser=fuser)
    assert tree.safety == {
        "level": "none", "categories": [], "score": 0.0, "cues": [], "why": "No sign of risk in the words.",
        "reply_overridden": False,
    }  # fmt: skip
    assert "⚠ safety" not in tree.render() and tree.models["safety"] == "safety-patterns+meaning"
    validate(tree.to_dict(), tree_schema)
    old = tree.to_dict()
    del old["safety"]  # a tree written before the safety field still loads
    assert AffectTree.from_dict(old).safety is None
    with pytest.raises(ValueError, match="level is one of none, concern, crisis"):
        dataclasses.replace(tree, safety={"level": "panic", "reply_overridden": False})
    with pytest.raises(ValueError, match="reply_overridden"):
        dataclasses.replace(tree, safety={"level": "none"})
    bad = tree.to_dict()
    bad["safety"]["level"] = "panic"
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        validate(bad, tree_schema)


def _said(words: str, label: str, fine: dict[str, float], p: float = 0.9) -> AnalysisResult:
    """Typed words read as ``label`` with the GoEmotions labels ``fine``."""
    emotion = TextEmotion(_pred(label, p), fine, ((words.split()[0], 0.3),))
    utterance = Utterance(0, 0.0, 0.0, words, None, emotion)
    return AnalysisResult("<text>", "text", None, None, None, None, (), {"text_emotion": "tiny"}, {}, (utterance,))


def _plan(*strategies: str):
    return lambda tree: [(s, "test", 0.6) for s in strategies]


def test_a_greeting_is_greeted_back_not_asked_about_it(fuser: LateFusion, tree_schema: dict) -> None:
    from fusion.tree import GREETING_REPLIES, greeting_kind

    ask = _plan("Question")
    tree = build_tree(_said("Hi, how are you?", "neutral", {"neutral": 0.9}), fuser=fuser, planner=ask)
    assert tree.reply.text == GREETING_REPLIES["greeting, asking how we are"]
    assert (
        "it" not in (tree.reply.text or "").lower().split()
        and tree.reply.value["kind"] == "greeting, asking how we are"
    )
    validate(tree.to_dict(), tree_schema)
    hello = build_tree(_said("Hello!", "neutral", {"neutral": 0.9}), fuser=fuser, planner=ask)
    assert hello.reply.text == GREETING_REPLIES["greeting"]
    again = build_tree(_said("hello?", "neutral", {"neutral": 0.9}), fuser=fuser, planner=ask, history=["I failed."])
    assert again.reply.text == GREETING_REPLIES["greeting again"]
    for asked in ("How are you?", "How about you?", "and you?"):  # later in a conversation, still answered
        tree = build_tree(_said(asked, "neutral", {"neutral": 0.9}), fuser=fuser, planner=ask, history=["I'm ok."])
        assert tree.reply.text == GREETING_REPLIES["asking how we are"], asked
    assert greeting_kind("Hello. How are you today?") == "greeting, asking how we are"
    assert greeting_kind("Good morning there") == "greeting"
    assert greeting_kind("Hi, I lost my job today.") is None and greeting_kind("") is None
    assert greeting_kind("Hey, I'm doing well, how are you?") is None  # they answered something: read as usual
    for present in ("anybody home?", "Is anyone there?", "Hello, are you there?"):  # a presence check
        assert greeting_kind(present) == "greeting" and greeting_kind(present, earlier=True) == "greeting again"
    news = build_tree(_said("Hi, I lost my job today.", "sadness", {"grief": 0.5}), fuser=fuser, planner=ask)
    assert "kind" not in news.reply.value and news.reply.text != GREETING_REPLIES["greeting"]


def test_a_happy_reading_follows_its_kind_of_gladness(fuser: LateFusion, tree_schema: dict) -> None:
    from fusion.tree import GLAD_TO_BE_HERE, HARD_NEWS, gladness

    plan = _plan("Reflection of feelings", "Affirmation and Reassurance", "Question")

    def reply(fine: dict[str, float], words: str = "It went the way it went today.") -> tuple[str, str | None]:
        tree = build_tree(_said(words, "happiness", fine), fuser=fuser, planner=plan)
        validate(tree.to_dict(), tree_schema)
        return tree.reply.text or "", tree.reply.value.get("kind")

    assert reply({"joy": 0.8, "approval": 0.3}) == (
        "It sounds like you're feeling happy. That's really good to hear. What made it so good?", "good news"
    )  # fmt: skip
    assert reply({"relief": 0.6})[0].startswith("It sounds like you're feeling relieved.")
    assert reply({"optimism": 0.9, "approval": 0.1}) == (
        "It sounds like you're feeling hopeful. Thank you for telling me. How are you feeling about it?", "hope"
    )  # fmt: skip
    # a gladness the negative labels outweigh is hard news ("I'm feeling very overwhelmed"; "It's going to be nearly
    # impossible to find something good now"): no glad feeling named, and not a bare thanks
    for outweighed in ({"joy": 0.3, "sadness": 0.4, "anger": 0.3}, {"optimism": 0.3, "fear": 0.4}):
        assert reply(outweighed) == (f"{HARD_NEWS} Would you like to tell me more about it?", "hard news")
    # mixed news, good news outweighed by less than twice as much, is acknowledged ("I'm feeling very overwhelmed")
    assert reply({"excitement": 0.11, "nervousness": 0.07, "disappointment": 0.06}) == (
        "Thank you for telling me. How are you feeling about it?", "acknowledgement"
    )  # fmt: skip
    # gladness that we are here is answered in kind, not asked "What made it so good?"
    assert reply({"joy": 0.9}, "That is okay! I'm glad you're here") == (
        f"{GLAD_TO_BE_HERE} What's on your mind?", "glad we're talking"
    )  # fmt: skip
    # approval, admiration, caring, love: not news to celebrate ("Yes, I am looking for emotional support.")
    assert reply({"approval": 0.5, "joy": 0.1}) == (
        "Thank you for telling me. How are you feeling about it?", "acknowledgement"
    )  # fmt: skip
    assert reply({"gratitude": 0.95}, "Thank you so much!") == (
        "You're welcome. I'm glad if this helps. How are you feeling now?", "thanks"
    )  # fmt: skip
    more = build_tree(
        _said("Thanks. I wish that I could get over her.", "happiness", {"gratitude": 0.9}), fuser=fuser, planner=plan
    )
    assert more.reply.value["kind"] == "thanks, and more" and "glad if this helps" not in (more.reply.text or "")
    assert more.reply.text == "You're welcome, and thank you for telling me more. How are you feeling about it?"
    assert gladness(None) == "good news"  # a smile without words


def test_neutral_words_are_thanked_not_told_they_are_a_lot(fuser: LateFusion) -> None:
    said = _said("I'm a freelance writer so I choose my own hours.", "neutral", {"neutral": 0.8}, p=0.8)
    tree = build_tree(said, fuser=fuser, planner=_plan("Affirmation and Reassurance"))
    assert tree.reply.text == "Thank you for telling me about this."
    # ... unless the negative labels say it is hard news the text model reads as neutral
    from fusion.tree import HARD_NEWS

    heavy = _said(
        "I have been isolated for 2 years since my wife left in the night.", "neutral",
        {"neutral": 0.5, "sadness": 0.25, "disappointment": 0.15}, p=0.5,
    )  # fmt: skip
    tree = build_tree(heavy, fuser=fuser, planner=_plan("Affirmation and Reassurance"))
    assert tree.reply.text == HARD_NEWS and tree.reply.value["kind"] == "hard news"


def test_a_question_about_our_own_experience_is_answered_honestly(fuser: LateFusion) -> None:
    from fusion.safety import check_reply
    from fusion.tree import AI_EXPERIENCE_ANSWER

    said = _said("Have you ever felt that way?", "sadness", {"sadness": 0.6})
    tree = build_tree(said, fuser=fuser, planner=_plan("Restatement or Paraphrasing", "Question"))
    reply = tree.reply.text or ""
    assert reply.startswith(AI_EXPERIENCE_ANSWER) and "this is about" not in reply  # answered, not said back
    assert check_reply(reply) == []
    failed = build_tree(
        _said("Have you ever failed a test?", "sadness", {"sadness": 0.6}), fuser=fuser, planner=_plan("Question")
    )
    assert (failed.reply.text or "").startswith(AI_EXPERIENCE_ANSWER)
    affirm = build_tree(
        _said("Have you ever felt this low?", "sadness", {"sadness": 0.6}), fuser=fuser,
        planner=_plan("Affirmation and Reassurance"),
    )  # fmt: skip
    assert affirm.reply.text == AI_EXPERIENCE_ANSWER  # not "... feel this way. ... makes sense to feel this way."
    plain = build_tree(_said("I failed again.", "sadness", {"sadness": 0.6}), fuser=fuser, planner=_plan("Question"))
    assert AI_EXPERIENCE_ANSWER not in (plain.reply.text or "")


def test_a_feeling_just_said_is_not_asked_again(fuser: LateFusion) -> None:
    from fusion.tree import TELL_ME_WHAT_HAPPENED

    ask = _plan("Question")
    for said in (
        "I'm feeling very overwhelmed at the moment.", "I am good, just feeling low.", "I'm doing ok.",
        "Hi, I'm struggling today.", "Doing well, thanks.", "Sort of down. Sort of empty.",
    ):  # fmt: skip
        tree = build_tree(_said(said, "neutral", {"neutral": 0.5}, p=0.5), fuser=fuser, planner=ask)
        assert tree.reply.text == TELL_ME_WHAT_HAPPENED, said
    other = build_tree(_said("My exam is tomorrow.", "neutral", {"neutral": 0.5}, p=0.5), fuser=fuser, planner=ask)
    assert other.reply.text != TELL_ME_WHAT_HAPPENED


def test_a_restatement_says_back_only_words_that_read_cleanly() -> None:
    from fusion.tree import said_back

    assert said_back("I've not been doing great to be honest.") == "I've not been doing great."
    assert said_back("I'm doing alright I suppose, just trying.") == "I'm doing alright, just trying."
    assert said_back("Yes, my fiance and I are splitting up") == "My fiance and I are splitting up"
    assert said_back("Well, I moved to a new state - feeling pretty alone.") == "I moved to a new state"
    assert said_back("No one showed up to my party") == "No one showed up to my party"  # not an interjection
    for broken in (
        "I can't believe it I just got layed off.",  # a typo, and "it" run into a new clause
        "I don't know what else I can d to help my daughter.",
        "Except I guess not anymore with this one friend...",  # leans on another sentence
        "I am today very sad because my friends fighting with me",  # a bare "-ing" verb
        "My friends avoiding my phone calls and message",
    ):
        assert said_back(broken) is None, broken
    assert said_back("My dad keeps saying I'm useless with cars.") is not None
    assert said_back("The morning was hard for me") is not None


def test_a_restatement_never_keeps_their_we() -> None:
    assert second_person("We were together for five years and I miss him.") is None  # quoted instead
    assert second_person("Our house is too quiet since I moved.") is None


def test_a_smile_beside_other_words_keeps_its_own_gladness(fuser: LateFusion) -> None:
    # the face reads happiness, the words surprise: the words' optimism does not make the smile "hopeful"
    said = _said("I got the job! I still can't believe it.", "surprise", {"surprise": 0.8, "optimism": 0.3}, p=0.6)
    tree = build_tree([image(_face("happiness", 0.95)), said], fuser=fuser, planner=_plan("Reflection of feelings"))
    assert tree.emotion.value["label"] == "happiness"
    assert "happy" in (tree.reply.text or "") and "hopeful" not in (tree.reply.text or "")


def test_questions_put_to_the_supporter_are_acknowledged(fuser: LateFusion) -> None:
    from fusion.tree import CANNOT_KNOW, SUGGESTIONS, THANKED_FOR_ASKING, last_question, suggestion_for

    ask = _plan("Restatement or Paraphrasing", "Question")

    def reply(words: str) -> str:
        return build_tree(_said(words, "neutral", {"neutral": 0.6}, p=0.6), fuser=fuser, planner=ask).reply.text or ""

    assert reply("Hey, I'm doing well, how are you?").startswith(THANKED_FOR_ASKING)
    assert reply("I am a bit tired today, how are you Carolyn?").startswith(THANKED_FOR_ASKING)
    view = reply("Would this relate to a health problem or maybe stress?")
    assert view.startswith(CANNOT_KNOW) and "this is about" not in view  # acknowledged, not quoted back
    assert reply("Is there any idea about covid20").startswith(CANNOT_KNOW)  # no question mark typed
    advice = reply("I lost my job. What should I do?")  # advice: the suggestion, not "I can't know"
    assert suggestion_for("I lost my job.") == ("work", SUGGESTIONS[4][2])  # the topic's suggestion, not the offer
    assert SUGGESTIONS[4][2] in advice and CANNOT_KNOW not in advice
    for plain in (
        "Can you help me?", "Are you there?", "Is anyone there?", "I am ok. Could be better", "I lost my job today.",
        "How are you feeling about this job?",
    ):  # fmt: skip
        assert not reply(plain).startswith((CANNOT_KNOW, THANKED_FOR_ASKING)), plain
    suggest = build_tree(
        _said("Do you think I should book another test?", "neutral", {"neutral": 0.6}, p=0.6), fuser=fuser,
        planner=_plan("Providing Suggestions", "Restatement or Paraphrasing"),
    )  # fmt: skip
    assert (
        suggest.reply.text
        == "I can't know that for sure. If it would help, we could think through one small next step together."
    )
    assert last_question("I failed. Should I try again?") == "Should I try again?"
    assert last_question("Is it late. I think so.") is None


def test_requests_for_help_advice_or_validation_are_met(fuser: LateFusion) -> None:
    from fusion.tree import HERE_FOR_YOU, IT_MAKES_SENSE, TELL_ME_WHAT_HAPPENED

    plan = _plan("Affirmation and Reassurance", "Question")

    def reply(words: str, label: str = "neutral", fine: dict[str, float] | None = None, p: float = 0.7) -> str:
        said = _said(words, label, fine or {"neutral": 0.6}, p=p)
        return build_tree(said, fuser=fuser, planner=plan).reply.text or ""

    helped = reply("Hi can you help me with my problem?", "sadness", {"sadness": 0.5})
    assert helped == f"{HERE_FOR_YOU} {TELL_ME_WHAT_HAPPENED}"  # nothing told yet: no "That's a lot to deal with"
    assert reply("Am I right to feel this way?", "anger", {"anger": 0.5}).startswith(IT_MAKES_SENSE)
    talk = build_tree(
        _said("I would like to talk about my old friend", "neutral", {"neutral": 0.6}, p=0.7), fuser=fuser,
        planner=_plan("Others"),
    )  # fmt: skip
    assert talk.reply.text == HERE_FOR_YOU  # not "I'm here for you, and I'm listening. I'm here to listen."
    lonely = reply("Got any advice for a lonely guy?", "sadness", {"sadness": 0.5})
    assert "feel less alone" in lonely and "one small next step" not in lonely  # the topic's suggestion
    assert "one small next step" in reply("Got any advice?", "sadness", {"sadness": 0.5})  # no topic: the offer
    advice = build_tree(_said("Got any advice?", "sadness", {"sadness": 0.5}), fuser=fuser, planner=plan)
    assert "Providing Suggestions" in advice.reply.value["strategies"]  # the reply node names what it used
    # a feeling said in other words, or a confirmation, is not asked about again
    for said in (
        "hi I need help. I'm under academic stress", "I am in a bad mood", "That is correct", "Yes it was", "good",
        "my stress very high",
    ):  # fmt: skip
        assert TELL_ME_WHAT_HAPPENED in reply(said, p=0.3), said  # an unsure reading would ask how they feel
    # "lol" beside bad news is not good news
    lol = reply("No one showed up again lol", "happiness", {"amusement": 0.6, "joy": 0.1})
    assert "good to hear" not in lol and "made it so good" not in lol


def test_long_or_garbled_sentences_are_not_said_back(fuser: LateFusion) -> None:
    restate = _plan("Restatement or Paraphrasing")

    def reply(words: str) -> str:
        said = _said(words, "sadness", {"sadness": 0.6})
        return build_tree(said, fuser=fuser, planner=restate).reply.text or ""

    assert "you're saying that" not in reply("Hoping I won't be punished with a rejection for talking to myself.")
    assert "you're saying that" not in reply("I'm anxious about finding work and and impatient with it.")
    long = (
        "I am out of work due to Covid19 it is hard moving not being able to support my family and my kids and my wife"
    )
    assert "you're saying" not in reply(long) and "this is about" not in reply(long)
    assert reply("I lost my job today.") == "If I understand you right, you're saying that you lost your job today."
    assert reply("They have been guilt tripping me and I feel very confused.") == (
        "If I understand you right, you're saying that they have been guilt tripping you and you feel very confused."
    )  # a subject other than "you" is fine


def test_the_word_list_knows_english_words_and_their_contractions() -> None:
    from fusion.wordlist import english_words, known_word, reads_as_english

    assert len(english_words()) > 100_000  # pyspellchecker's list, installed with the package
    for word in ("couldn't", "can't", "won't", "I've", "she's", "you’re", "fiance", "covid", "a", "I"):
        assert known_word(word), word
    for typo in ("layed", "extremally", "superifical", "d", "thats", "couldnt"):
        assert not known_word(typo), typo
    assert reads_as_english("My dad keeps saying I'm useless with cars.")
    assert not reads_as_english("I can d it") and not reads_as_english("...")


def test_questions_and_greetings_in_other_words(fuser: LateFusion) -> None:
    from fusion.tree import GREETING_REPLIES, THANKED_FOR_ASKING, greeting_kind

    ask = _plan("Question")

    def reply(words: str, history: tuple[str, ...] = ()) -> str:
        said = _said(words, "neutral", {"neutral": 0.6}, p=0.6)
        return build_tree(said, fuser=fuser, planner=ask, history=history).reply.text or ""

    assert reply("fine what about you").startswith(THANKED_FOR_ASKING)  # no question mark typed
    assert reply("You doing alright?", history=("My boss yelled at me.",)) == GREETING_REPLIES["asking how we are"]
    assert greeting_kind("Hello, it's nice to meet you.") == "greeting"
    assert greeting_kind("Is there anyone online") == "greeting"
    # a presence check after they have told something: not asked "What's on your mind?" again
    assert reply("anyone there", history=("My boss yelled at me.",)) == GREETING_REPLIES["greeting again"]
    assert "What's on your mind" not in GREETING_REPLIES["greeting again"]
    assert greeting_kind("Are you ok with that plan?") is None


def test_you_are_welcome_only_when_thanked(fuser: LateFusion) -> None:
    plan = _plan("Affirmation and Reassurance", "Question")
    said = _said("I am seeking some emotional help with my depression", "happiness", {"gratitude": 0.6})
    reply = build_tree(said, fuser=fuser, planner=plan).reply
    assert "welcome" not in (reply.text or "") and reply.value["kind"] == "acknowledgement"
    thanked = build_tree(_said("Thanks a lot.", "happiness", {"gratitude": 0.9}), fuser=fuser, planner=plan).reply
    assert (thanked.text or "").startswith("You're welcome.")


def test_advice_asked_for_gets_the_topic_suggestion_from_earlier_turns(fuser: LateFusion) -> None:
    from fusion.safety import check_reply
    from fusion.tree import SUGGESTIONS, suggestion_for

    said = _said("Yes please, I'm desperate, I'll try anything!", "fear", {"nervousness": 0.5})
    tree = build_tree(said, fuser=fuser, planner=_plan("Question"), history=("I can't sleep at night.",))
    assert "steady bedtime" in (tree.reply.text or "")  # the sleep topic, from the earlier turn
    assert "Providing Suggestions" in tree.reply.value["strategies"]
    assert suggestion_for("How do I find a support group? I live in a rural place.")[0] == "therapy"
    assert suggestion_for("Yelling does not work.", ("My kids never listen to me.",))[0] == "children"  # not work
    assert suggestion_for("What should I do?") is None
    unasked = build_tree(
        _said("I can't sleep at night.", "sadness", {"sadness": 0.6}), fuser=fuser,
        planner=_plan("Providing Suggestions"),
    )  # fmt: skip
    assert "one small next step" in (unasked.reply.text or "")  # the planner's suggestion, unasked: the offer
    for _, _, suggestion in SUGGESTIONS:
        assert check_reply(suggestion) == [], suggestion


def test_eighth_round_verbs_losses_and_questions(fuser: LateFusion) -> None:
    from fusion.tree import CONDOLENCE, SUGGESTIONS, TELL_ME_WHAT_HAPPENED, THANKED_FOR_ASKING

    assert second_person("I dislike my job but am unsure about it") == "you dislike your job but are unsure about it"
    assert second_person("She lives near me so I wasn't surprised") == "she lives near you so you weren't surprised"
    ask = _plan("Question")

    def reply(words: str, label: str = "sadness", history: tuple[str, ...] = ()) -> str:
        said = _said(words, label, {label: 0.6}, p=0.6)
        return build_tree(said, fuser=fuser, planner=ask, history=history).reply.text or ""

    assert reply("Hi. My fiance died four years ago today and I am very sad.").startswith(CONDOLENCE)
    for other in (
        "My mom almost died in the crash.", "I lost my job.", "My phone died again.",
        "Hi, I'm coping with losing my boyfriend to another woman and can't deal.",  # a breakup, not a death
    ):  # fmt: skip
        assert CONDOLENCE not in reply(other), other
    assert reply("ok. you?", "neutral", ("My boss yelled at me.",)).startswith(THANKED_FOR_ASKING)
    from fusion.tree import GREETING_REPLIES

    assert reply("You?", "neutral", ("My boss yelled at me.",)) == GREETING_REPLIES["asking how we are"]
    okie = build_tree(_said("I am okie. how are you?", "neutral", {"neutral": 0.3}, p=0.3), fuser=fuser, planner=ask)
    assert okie.reply.text == f"{THANKED_FOR_ASKING} {TELL_ME_WHAT_HAPPENED}"  # unsure reading: not asked again
    stuck = reply("I'm not sure what to do", "sadness", ("I lost my job last week.",))
    assert SUGGESTIONS[4][2] in stuck  # asked what to do: the work topic's suggestion, from the earlier turn


def test_ninth_round_names_pointing_back_and_short_statements(fuser: LateFusion) -> None:
    from fusion.tree import as_statement, greeting_kind, said_back

    assert greeting_kind("Hello Christina") == "greeting" and greeting_kind("hi sad") is None
    assert said_back("That is what is upsetting my boyfriend so much.") is None  # points back at what came before
    assert as_statement("the other day") is None  # not a statement
    assert as_statement("He makes disrespectful comments.") == "he makes disrespectful comments"
    assert said_back("They are in 1") is None  # a sentence cut at "1.5 weeks"
    assert as_statement("The whole team was let go today.") == "the whole team was let go today"
    from fusion.tree import THANKED_FOR_ASKING

    said = _said("Hey, I'm doing good at the moment. How about yourself?", "happiness", {"joy": 0.6})
    assert (build_tree(said, fuser=fuser, planner=_plan("Question")).reply.text or "").startswith(THANKED_FOR_ASKING)
    pain = build_tree(
        _said("how to overcome this pain", "sadness", {"sadness": 0.6}), fuser=fuser, planner=_plan("Others")
    )
    assert "Providing Suggestions" in pain.reply.value["strategies"]

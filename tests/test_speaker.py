"""``affectlens.speaker``: utterances joined to the face whose mouth moves while it is spoken.

Synthetic ``faces`` / ``utterances`` tables (a mouth that talks moves at 4 Hz, a still one only jitters), plus
one small run through ``annotate_files`` with the tiny injected analyzer of ``tests/test_annotate.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from affectlens.annotate import TIMELINE_COLUMNS, UTTERANCE_COLUMNS, AnnotateSettings, annotate_files, build_timeline
from affectlens.speaker import (
    AU25_STEP,
    SpeakerSettings,
    assign_speakers,
    mouth_openings,
    speaker_scores,
    with_speakers,
)

FPS = 10.0
STEP = 1.0 / FPS
DURATION = 12.0


def _track(
    track: int,
    talking: list[tuple[float, float]],
    seed: int,
    visible: tuple[float, float] = (0.0, DURATION),
    amplitude: float = 0.05,
) -> list[dict[str, object]]:
    """Rows of one face: mouth at rest (0.01 plus mesh jitter), or opening and closing at 4 Hz while talking."""
    rng = np.random.default_rng(seed)
    times = np.round(np.arange(0.0, DURATION, STEP), 6)
    rows = []
    for t in times:
        if not visible[0] <= t < visible[1]:
            continue
        mouth = 0.01 + rng.normal(0, 0.002)
        if any(s <= t <= e for s, e in talking):
            mouth += amplitude * (1 + np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 1)))
        rows.append({"video": "v", "time": float(t), "track": track, "mouth_open": max(mouth, 0.0)})
    return rows


def _faces(*tracks: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame([row for rows in tracks for row in rows]).astype({"track": "Int64"})


def _utts(*spans: tuple[float, float]) -> pd.DataFrame:
    return pd.DataFrame([{"utterance": k, "start": s, "end": e} for k, (s, e) in enumerate(spans)])


def _speakers(faces: pd.DataFrame, utterances: pd.DataFrame, step: float = STEP) -> list[int | None]:
    return [a.track for a in assign_speakers(faces, utterances, step)]


A, B, NARRATOR = (1.0, 3.0), (5.0, 7.0), (8.5, 10.0)


def test_each_utterance_goes_to_the_mouth_that_moves_and_a_narrator_to_nobody() -> None:
    faces = _faces(_track(0, [A], seed=1), _track(1, [B], seed=2))
    utterances = _utts(A, B, NARRATOR)
    assert _speakers(faces, utterances) == [0, 1, None]
    scores = {(s.utterance, s.track): s for s in speaker_scores(faces, utterances, STEP)}
    assert scores[0, 0].score > 0.5 and scores[0, 1].score < 0.1 and scores[1, 1].score > 0.5
    assert all(s.presence == pytest.approx(1.0) for s in scores.values())
    assert max(scores[2, 0].score, scores[2, 1].score) < 0.1  # both mouths still: no speaker
    # The same at 5 fps (undersampled, but an utterance of 2 s still shows a talking mouth).
    assert _speakers(faces[np.isclose((faces["time"] * 5) % 1, 0)], utterances, step=0.2) == [0, 1, None]


def test_a_mouth_that_moves_in_silence_too_is_not_taken_for_the_speaker() -> None:
    # Track 1 chews all the time: it moves as much during A as in silence, so A is track 0's alone.
    chewing = _track(1, [(0.0, DURATION)], seed=2, amplitude=0.03)
    scores = {s.track: s for s in speaker_scores(_faces(_track(0, [A], seed=1), chewing), _utts(A), STEP)}
    assert scores[1].baseline > 0.02 and scores[1].score < 0.1 < 0.5 < scores[0].score
    assert _speakers(_faces(_track(0, [A], seed=1), chewing), _utts(A)) == [0]


def test_au25_is_the_fallback_measure() -> None:
    faces = _faces(_track(0, [A], seed=1), _track(1, [B], seed=2))
    faces["AU25"] = faces.pop("mouth_open") / AU25_STEP
    assert _speakers(faces, _utts(A, B, NARRATOR)) == [0, 1, None]


def test_a_face_seen_for_a_tenth_of_the_utterance_does_not_win() -> None:
    # Track 2 is on screen for 0.2 s of a 2 s utterance and moves a lot; track 1 talks, less wildly, throughout.
    glimpse = _track(2, [B], seed=3, visible=(5.0, 5.2), amplitude=0.2)
    faces = _faces(_track(0, [], seed=1), _track(1, [B], seed=2), glimpse)
    scores = {s.track: s for s in speaker_scores(faces, _utts(B), STEP)}
    assert scores[2].presence == pytest.approx(0.1) and scores[2].score <= 0.1
    assert _speakers(faces, _utts(B)) == [1]
    alone = _faces(_track(0, [], seed=1), glimpse)  # the glimpse alone is not enough either
    assert _speakers(alone, _utts(B)) == [None]


def test_two_mouths_moving_alike_are_a_tie_and_the_speaker_stays_unknown() -> None:
    faces = _faces(_track(0, [A], seed=1), _track(1, [A], seed=2))
    (found,) = assign_speakers(faces, _utts(A), STEP)
    assert found.track is None and found.score > SpeakerSettings().threshold  # strong, but not one face's
    lenient = SpeakerSettings(margin=0.0)
    assert assign_speakers(faces, _utts(A), STEP, lenient)[0].track in (0, 1)


def test_no_faces_or_no_mouth_measure_gives_unknown_speakers() -> None:
    utterances = _utts(A)
    empty = pd.DataFrame({"video": [], "time": [], "track": pd.array([], dtype="Int64"), "mouth_open": []})
    (found,) = assign_speakers(empty, utterances, STEP)
    assert found.track is None and np.isnan(found.score)
    faces = _faces(_track(0, [A], seed=1))
    faces["mouth_open"] = np.nan
    out = with_speakers(utterances, faces, STEP)
    assert out["speaker_track"].dtype == "Int64" and out["speaker_track"].isna().all()
    assert with_speakers(utterances.iloc[:0], faces, STEP).empty
    with pytest.raises(ValueError, match="step must be positive"):
        speaker_scores(faces, utterances, 0.0)


def test_mouth_openings_measure_the_inner_lip_gap_in_interocular_units() -> None:
    points = np.zeros((468, 3))
    points[33, :2], points[263, :2] = (30, 40), (70, 40)  # outer eye corners: 40 px apart
    points[10, :2], points[152, :2] = (50, 10), (50, 100)  # forehead and chin
    points[13, :2], points[14, :2] = (50, 70), (50, 74)  # inner lips, 4 px apart
    assert mouth_openings([points, None]) == [pytest.approx(0.1), None]
    gap = pytest.approx(0.1)
    assert mouth_openings([None, points, points * 2, None, points], batch=2) == [None, gap, gap, None, gap]
    assert mouth_openings([]) == []


def test_timeline_lists_spoken_and_heard_utterances_apart() -> None:
    faces = _faces(_track(0, [A], seed=1), _track(1, [B], seed=2))
    faces["state"], faces["smoothed_confidence"] = "neutral", 0.9
    utterances = _utts(A, B).assign(video="v", text=["from zero", "from one"], speech_label=["anger", "fear"])
    utterances = with_speakers(utterances.reindex(columns=list(UTTERANCE_COLUMNS)), faces, STEP)
    timeline = build_timeline(faces, utterances, STEP)
    assert list(timeline.columns) == list(TIMELINE_COLUMNS)
    assert timeline[["track", "utterances", "transcript", "voice_label", "heard_utterances"]].values.tolist() == [
        [0, "0", "from zero", "anger", "0,1"],
        [1, "1", "from one", "fear", "0,1"],
    ]


def test_annotate_writes_the_speaker_columns(tmp_path: Path) -> None:
    from affectlens import load_annotations
    from tests.test_analyzer_multimodal import _write_av
    from tests.test_annotate import tiny_analyzer

    video = _write_av(tmp_path / "clip.mp4", seconds=1.0)
    report = annotate_files([video], tmp_path / "out", AnnotateSettings(fps=5, report=False), analyzer=tiny_analyzer())
    assert report.ok
    data = load_annotations(tmp_path / "out")
    assert data.utterances["speaker_track"].dtype == "Int64" and data.utterances["speaker_score"].dtype == "float64"
    assert data.faces["mouth_open"].dtype == "float64" and data.timeline["heard_utterances"].dtype == "string"
    assert len(data.utterances) == 1 and data.timeline["heard_utterances"].tolist() == ["0"]

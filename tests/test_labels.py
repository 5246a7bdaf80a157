from __future__ import annotations

import pytest

from affectlens.labels import CANONICAL_EMOTIONS, LABEL_MAP, canonical_label


@pytest.mark.parametrize(
    ("dataset_name", "expected"),
    [
        ("happy", "happiness"),
        ("Angry", "anger"),
        ("sad", "sadness"),
        ("surprised", "surprise"),
        ("fearful", "fear"),
        ("disgusted", "disgust"),
        ("joy", "happiness"),
        ("neutral", "neutral"),
        ("calm", None),
        ("boredom", None),
        (" Disgust ", "disgust"),
    ],
)
def test_dataset_names_map_to_canonical(dataset_name: str, expected: str | None) -> None:
    assert canonical_label(dataset_name) == expected


def test_unknown_label_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown emotion label 'grumpy'"):
        canonical_label("grumpy")


def test_every_mapping_lands_on_a_canonical_name_or_none() -> None:
    allowed = {*CANONICAL_EMOTIONS, "contempt", None}
    assert set(LABEL_MAP.values()) <= allowed
    assert len(CANONICAL_EMOTIONS) == 7 and CANONICAL_EMOTIONS[0] == "neutral"


def test_valence_arousal_is_the_weighted_circumplex_position() -> None:
    from affectlens.labels import CIRCUMPLEX, valence_arousal

    assert valence_arousal({"happiness": 1.0}) == CIRCUMPLEX["happiness"]
    v, a = valence_arousal({"happiness": 0.5, "sadness": 0.5})
    assert v == pytest.approx((0.8 - 0.7) / 2) and a == pytest.approx(0.0)
    assert all(-1 <= x <= 1 for pair in CIRCUMPLEX.values() for x in pair)

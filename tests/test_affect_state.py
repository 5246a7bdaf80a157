"""Affect state over turns: inertia, recovery, momentum, confidence, isolation, persistence, descriptions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusion.affect_state import (
    DOMINANCE,
    AffectDynamics,
    AffectObservation,
    AffectState,
    AffectTracker,
    describe_trajectory,
    dominance_of,
    observation_from,
)
from fusion.late import FusedEmotion

NO_DRIFT = AffectDynamics(baseline_rate=0.0)


def _obs(valence: float, confidence: float = 1.0, arousal: float = 0.0, turn: int | None = None) -> AffectObservation:
    return AffectObservation(valence, arousal, 0.0, confidence, turn=turn)


def _settle(tracker: AffectTracker, user: str, valence: float, turns: int = 40) -> AffectState:
    for _ in range(turns):
        state = tracker.update(user, _obs(valence))
    return state


# -- dominance and observations --------------------------------------------------------------------------


def test_dominance_table_and_weighting() -> None:
    assert all(-1 <= d <= 1 for d in DOMINANCE.values())
    assert DOMINANCE["fear"] < DOMINANCE["sadness"] < DOMINANCE["neutral"] < DOMINANCE["anger"]
    assert dominance_of({"fear": 1.0}) == pytest.approx(DOMINANCE["fear"])
    assert dominance_of({"anger": 0.5, "fear": 0.5}) == pytest.approx((DOMINANCE["anger"] + DOMINANCE["fear"]) / 2)
    # dataset spellings are read through the label table; labels without a canonical class are left out
    assert dominance_of({"joy": 2.0, "calm": 5.0}) == pytest.approx(DOMINANCE["happiness"])
    assert dominance_of({}) == 0.0
    with pytest.raises(KeyError):
        dominance_of({"euphoria": 1.0})


def test_observation_validates_and_uncertain_fusion_counts_less() -> None:
    with pytest.raises(ValueError):
        AffectObservation(1.5, 0.0)
    with pytest.raises(ValueError):
        AffectObservation(0.0, 0.0, confidence=float("nan"))
    sure = observation_from(-0.5, 0.6, {"fear": 0.8, "neutral": 0.2}, 0.8, turn=3)
    unsure = observation_from(-0.5, 0.6, {"fear": 0.8, "neutral": 0.2}, 0.8, turn=3, uncertain=True)
    assert sure.dominance == pytest.approx(0.8 * DOMINANCE["fear"])
    assert sure.turn == 3 and unsure.confidence < sure.confidence
    fused = FusedEmotion({"fear": 0.3, "neutral": 0.7}, -0.2, 0.3, {"text": 1.0}, uncertain=True, method="late")
    obs = AffectObservation.from_fused(fused, turn=1)
    assert (obs.valence, obs.arousal, obs.turn) == (-0.2, 0.3, 1)
    assert obs.confidence == pytest.approx(0.7 * 0.5)


# -- dynamics ------------------------------------------------------------------------------------------------


def test_first_observation_initialises_the_state() -> None:
    tracker = AffectTracker()
    assert tracker.state("u") is None and tracker.trajectory("u") == []
    state = tracker.update("u", AffectObservation(-0.4, 0.5, -0.2, 0.6, turn=7))
    assert (state.valence, state.arousal, state.dominance) == (-0.4, 0.5, -0.2)
    assert state.velocity == (0.0, 0.0, 0.0) and state.turn == 7 and state.confidence == 0.6


def test_inertia_one_outlier_turn_moves_the_state_only_part_way() -> None:
    tracker = AffectTracker(NO_DRIFT)
    calm = _settle(tracker, "u", 0.3)
    outlier = tracker.update("u", _obs(-0.9))
    moved = calm.valence - outlier.valence
    assert 0.2 < moved < 0.5 * (calm.valence + 0.9)  # part way, not to the outlier
    after = _settle(tracker, "u", 0.3, turns=15)
    assert after.valence == pytest.approx(calm.valence, abs=0.01)  # and back


def test_low_confidence_moves_the_state_less() -> None:
    moves = {}
    for confidence in (1.0, 0.5, 0.1):
        tracker = AffectTracker(NO_DRIFT)
        start = _settle(tracker, "u", 0.0)
        moves[confidence] = start.valence - tracker.update("u", _obs(-1.0, confidence)).valence
    assert moves[1.0] > moves[0.5] > moves[0.1] > 0
    assert moves[0.5] == pytest.approx(moves[1.0] / 2)


def test_recovery_towards_the_baseline_without_new_input() -> None:
    tracker = AffectTracker(AffectDynamics(baseline_rate=0.0, velocity_decay=0.0))
    tracker.update("u", _obs(0.8))
    states = [tracker.idle("u").valence for _ in range(40)]
    assert all(a > b for a, b in zip([0.8, *states], states, strict=False))  # monotone, no overshoot
    assert 0 <= states[-1] < 0.02
    assert tracker.state("u").observed is False  # type: ignore[union-attr]
    assert tracker.state("u").confidence < 0.01  # type: ignore[union-attr]


def test_the_baseline_follows_long_run_mood() -> None:
    tracker = AffectTracker()
    assert tracker.baseline("u") == (0.0, 0.0, 0.0)
    _settle(tracker, "u", -0.6, turns=60)
    assert tracker.baseline("u")[0] < -0.5
    # so a sad user at rest recovers towards their own sad baseline, not towards neutral
    resting = tracker.idle("u", turns=30)
    assert resting.valence < -0.5


def test_skipped_turns_are_idle_turns_and_turns_must_advance() -> None:
    tracker = AffectTracker(NO_DRIFT)
    tracker.update("u", _obs(0.8, turn=0))
    state = tracker.update("u", _obs(0.8, confidence=0.0, turn=10))
    assert [s.turn for s in tracker.trajectory("u")] == list(range(11))
    assert state.valence < 0.5  # nine turns of recovery happened in the gap
    with pytest.raises(ValueError, match="not after"):
        tracker.update("u", _obs(0.0, turn=10))
    with pytest.raises(KeyError):
        tracker.idle("nobody")


def _trend_run(velocity_decay: float) -> list[float]:
    tracker = AffectTracker(AffectDynamics(velocity_decay=velocity_decay, recovery=0.0, baseline_rate=0.0))
    readings = [-0.8 + 0.1 * t for t in range(12)] + [0.3] * 30
    return [tracker.update("u", _obs(r)).valence for r in readings]


def test_second_order_momentum_accelerates_along_a_trend_then_settles() -> None:
    with_momentum, without = _trend_run(0.3), _trend_run(0.0)
    steps = np.diff(with_momentum)
    assert steps[1] > steps[0] and steps[2] > steps[1]  # speeding up along the trend
    assert 0 < 0.3 - with_momentum[11] < 0.3 - without[11]  # and lagging it less
    assert max(with_momentum) < 0.3 + 0.05  # a small overshoot at most
    assert abs(steps[-5:]).max() < 1e-3 and with_momentum[-1] == pytest.approx(0.3, abs=1e-3)  # settled


@pytest.mark.parametrize(
    "dynamics",
    [AffectDynamics(), AffectDynamics(inertia=0.0, velocity_decay=0.99, recovery=0.99, baseline_rate=1.0)],
    ids=["default", "extreme"],
)
def test_state_stays_bounded_under_random_inputs(dynamics: AffectDynamics) -> None:
    rng = np.random.default_rng(0)
    tracker = AffectTracker(dynamics, max_history=100)
    for _ in range(1000):
        v, a, d = rng.uniform(-1, 1, 3)
        state = tracker.update("u", AffectObservation(v, a, d, float(rng.uniform())))
        values = np.array([state.valence, state.arousal, state.dominance, *state.velocity])
        assert np.isfinite(values).all()
        assert (np.abs(values[:3]) <= 1.0).all() and (np.abs(values[3:]) <= 2.0).all()
    assert len(tracker.trajectory("u")) == 100  # max_history


def test_users_are_isolated() -> None:
    tracker = AffectTracker()
    tracker.update("ann", _obs(0.9))
    tracker.update("ann", _obs(0.9))
    bob = tracker.update("bob", _obs(-0.7))
    assert bob.valence == -0.7 and bob.turn == 0
    assert tracker.state("ann").valence > 0.5  # type: ignore[union-attr]
    assert tracker.users() == ["ann", "bob"] and len(tracker.trajectory("ann")) == 2
    tracker.reset("ann")
    assert tracker.state("ann") is None and tracker.state("bob") == bob


def test_round_trip_through_json() -> None:
    tracker = AffectTracker(AffectDynamics(inertia=0.5, recovery=0.2), max_history=50)
    for i, v in enumerate([-0.5, -0.3, 0.1, 0.4]):
        tracker.update("u", AffectObservation(v, 0.2, -0.1, 0.8, turn=i, time=1.5 * i))
    tracker.update("w", _obs(0.2))
    raw = json.loads(json.dumps(tracker.to_dict()))
    restored = AffectTracker.from_dict(raw)
    assert restored.to_dict() == raw
    assert restored.dynamics == tracker.dynamics and restored.max_history == 50
    assert restored.baseline("u") == pytest.approx(tracker.baseline("u"))
    nxt = _obs(0.6)
    assert restored.update("u", nxt).valence == pytest.approx(tracker.update("u", nxt).valence, abs=1e-3)


def test_dynamics_are_validated() -> None:
    for bad in ({"inertia": 1.0}, {"velocity_decay": -0.1}, {"recovery": 1.0}, {"prior_baseline": (2.0, 0, 0)}):
        with pytest.raises(ValueError):
            AffectDynamics(**bad)  # type: ignore[arg-type]
    assert AffectDynamics(inertia=0.7).gain == pytest.approx(0.3)


# -- descriptions --------------------------------------------------------------------------------------------


def _state(turn: int, valence: float, arousal: float = 0.0) -> AffectState:
    return AffectState(valence, arousal, 0.0, (0.0, 0.0, 0.0), turn, 1.0)


def test_describe_trajectory() -> None:
    assert describe_trajectory([]) == "no affect readings yet"
    assert describe_trajectory([_state(0, 0.2)]).startswith("one reading so far (turn 0): valence +0.20")
    lifting = [_state(0, -0.9), _state(1, -0.5, 0.6), _state(2, -0.3, 0.4), _state(3, -0.1, 0.2)]
    assert describe_trajectory(lifting) == (
        "mood lifting over the last 3 turns: valence -0.50 → -0.10; calming down: arousal +0.60 → +0.20"
    )
    assert describe_trajectory([_state(0, 0.5), _state(1, 0.2)]).startswith("mood sinking over the last 2 turns")
    assert describe_trajectory([_state(0, 0.1), _state(1, 0.15)]).startswith("mood steady over the last 2 turns")
    with pytest.raises(ValueError):
        describe_trajectory(lifting, window=1)

"""Per-user affect state over turns: valence, arousal and dominance moved by each turn's reading with inertia,
momentum and recovery towards a slowly drifting baseline (a damped spring), kept as a trajectory.

Each turn ``t`` brings an observation ``o_t`` in [-1, 1]^3 (valence, arousal, dominance) with a confidence
``c_t`` in [0, 1]. With the state ``s``, its velocity ``v`` (the change over the last turn) and the user's
baseline ``b`` (all 3-vectors), ``g = 1 - inertia``, ``d = velocity_decay``, ``r = recovery``,
``β = baseline_rate``::

    v_t = d · v_{t-1}  +  g · c_t · (o_t - s_{t-1})  -  r · (s_{t-1} - b_{t-1})
    s_t = clip(s_{t-1} + v_t, -1, 1)            (v_t is then the realised step s_t - s_{t-1})
    b_t = b_{t-1} + β · c_t · (o_t - b_{t-1})
    κ_t = inertia · κ_{t-1} + (1 - inertia) · c_t      (the state's confidence)

- First order (**inertia**): without momentum and recovery a fully confident reading moves the state
  ``1 - inertia`` of the way to it, so one outlier turn moves it only part way; a reading with confidence
  ``c`` moves it ``c`` times as far (an uncertain reading barely moves it).
- Second order (**velocity_decay**): a share ``d`` of last turn's step carries over, so a consistent trend
  builds speed and the state lags it less; when the readings settle, the step dies out.
- **Recovery**: a pull of ``r`` per turn towards the baseline; a turn without a reading (``c = 0``, see
  ``AffectTracker.idle``) is moved by momentum and recovery alone. The baseline starts at
  ``prior_baseline`` (neutral) and follows the confident readings with rate ``β``: the user's long-run mood.
- Stability: without clipping the error ``s - o`` follows ``e_t = (1 + d - k) e_{t-1} - d e_{t-2}`` with
  ``k = g c + r``; both roots lie inside the unit circle for ``0 <= d < 1`` and ``0 < k < 2 (1 + d)``, which every
  valid config satisfies (``k <= 1 + r < 2``), so the state settles (a complex pair, i.e. a decaying
  overshoot, has modulus ``√d``). The clip keeps it in [-1, 1] whatever arrives.

The first reading of a user initialises the state (``s = o``, ``v = 0``). A reading whose turn skips turns is
preceded by idle steps for the skipped turns (at most ``max_idle_steps``), so recovery acts on gaps.
Dominance comes from the emotion distribution (``dominance_of``); valence and arousal from the fusion
(``fusion.late.FusedEmotion``). Models of this kind: Kuppens et al. (2010), "Feelings change: accounting for
individual differences in the temporal dynamics of affect" (DynAffect: home base, attractor strength).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from affectlens.labels import canonical_label

if TYPE_CHECKING:
    from fusion.late import FusedEmotion

logger = logging.getLogger(__name__)

#: The three affect dimensions, in the order every vector here uses.
DIMENSIONS: Final[tuple[str, str, str]] = ("valence", "arousal", "dominance")

#: Dominance (control, in [-1, 1]) of each canonical emotion. Signs and rough order follow the
#: pleasure-arousal-dominance placements of basic emotions commonly cited from Russell & Mehrabian (1977) and
#: Mehrabian (1996): anger, contempt, disgust and joy feel in control; fear and sadness submissive; surprise
#: slightly so. Values are rounded and approximate, not measured norms.
DOMINANCE: Final[dict[str, float]] = {
    "neutral": 0.0,
    "happiness": 0.4,
    "sadness": -0.4,
    "surprise": -0.1,
    "fear": -0.6,
    "disgust": 0.2,
    "anger": 0.3,
    "contempt": 0.3,
}

#: Share of its confidence that an uncertain (abstaining) fusion keeps in ``observation_from``.
UNCERTAIN_WEIGHT: Final = 0.5


def dominance_of(probabilities: Mapping[str, float]) -> float:
    """Probability-weighted dominance of a distribution over emotions, in [-1, 1] (``DOMINANCE``).

    Label names are read through ``affectlens.labels.canonical_label`` (``joy`` counts as happiness); labels with
    no canonical class (``calm``, ``boredom``) are left out. An empty or all-zero distribution gives 0.

    Raises:
        KeyError: a label unknown to ``affectlens.labels.LABEL_MAP``.
    """
    total = weighted = 0.0
    for label, p in probabilities.items():
        name = canonical_label(label)
        if name is None:
            continue
        total += float(p)
        weighted += float(p) * DOMINANCE[name]
    return _clip1(weighted / total) if total > 0 else 0.0


def _clip1(x: float) -> float:
    return min(1.0, max(-1.0, x))


def _check_unit(name: str, value: float, low: float = -1.0) -> float:
    value = float(value)
    if not math.isfinite(value) or not low <= value <= 1.0:
        raise ValueError(f"{name} must be a finite number in [{low:g}, 1], got {value}")
    return value


@dataclass(frozen=True)
class AffectObservation:
    """One turn's reading: valence, arousal, dominance in [-1, 1], how sure it is (``confidence`` in [0, 1]),
    the dialogue ``turn`` (``None``: the user's next turn) and optional ``time`` in seconds (kept, not used)."""

    valence: float
    arousal: float
    dominance: float = 0.0
    confidence: float = 1.0
    turn: int | None = None
    time: float | None = None

    def __post_init__(self) -> None:
        for name in DIMENSIONS:
            object.__setattr__(self, name, _check_unit(name, getattr(self, name)))
        object.__setattr__(self, "confidence", _check_unit("confidence", self.confidence, low=0.0))
        if self.turn is not None and int(self.turn) < 0:
            raise ValueError(f"turn must be >= 0, got {self.turn}")

    @property
    def vector(self) -> np.ndarray:
        """``(3,)`` float64: valence, arousal, dominance."""
        return np.array([self.valence, self.arousal, self.dominance], np.float64)

    @classmethod
    def from_fused(cls, fused: FusedEmotion, turn: int | None = None, time: float | None = None) -> AffectObservation:
        """The reading of a ``fusion.late.FusedEmotion`` (see ``observation_from``)."""
        return observation_from(
            fused.valence,
            fused.arousal,
            fused.probabilities,
            fused.confidence,
            turn,
            uncertain=fused.uncertain,
            time=time,
        )


def observation_from(
    valence: float,
    arousal: float,
    probabilities: Mapping[str, float],
    confidence: float,
    turn: int | None = None,
    *,
    uncertain: bool = False,
    time: float | None = None,
) -> AffectObservation:
    """An observation from a fused emotion's parts; dominance from ``probabilities`` (``dominance_of``).

    With ``uncertain`` (the fusion abstained) the confidence is scaled by ``UNCERTAIN_WEIGHT``. Inputs a little
    outside their range (rounding) are clipped. One line from a ``FusedEmotion`` ``f``:
    ``observation_from(f.valence, f.arousal, f.probabilities, f.confidence, turn, uncertain=f.uncertain)``.
    """
    c = min(1.0, max(0.0, float(confidence))) * (UNCERTAIN_WEIGHT if uncertain else 1.0)
    return AffectObservation(
        _clip1(float(valence)), _clip1(float(arousal)), dominance_of(probabilities), c, turn=turn, time=time
    )


@dataclass(frozen=True)
class AffectState:
    """The user's affect after a turn: position in [-1, 1]^3, ``velocity`` (the step taken this turn, per
    dimension, in ``DIMENSIONS`` order), the ``turn``, the state's ``confidence`` in [0, 1], and whether this turn
    had a reading (``observed``; ``False`` for idle turns)."""

    valence: float
    arousal: float
    dominance: float
    velocity: tuple[float, float, float]
    turn: int
    confidence: float
    observed: bool = True
    time: float | None = None

    @property
    def vector(self) -> np.ndarray:
        """``(3,)`` float64: valence, arousal, dominance."""
        return np.array([self.valence, self.arousal, self.dominance], np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "valence": round(self.valence, 4),
            "arousal": round(self.arousal, 4),
            "dominance": round(self.dominance, 4),
            "velocity": [round(v, 4) for v in self.velocity],
            "turn": self.turn,
            "confidence": round(self.confidence, 4),
            "observed": self.observed,
            "time": self.time,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AffectState:
        v = raw["velocity"]
        return cls(
            float(raw["valence"]),
            float(raw["arousal"]),
            float(raw["dominance"]),
            (float(v[0]), float(v[1]), float(v[2])),
            int(raw["turn"]),
            float(raw["confidence"]),
            bool(raw.get("observed", True)),
            None if raw.get("time") is None else float(raw["time"]),
        )


@dataclass(frozen=True)
class AffectDynamics:
    """Parameters of the update in the module docstring.

    ``inertia``: share of the previous state a fully confident reading leaves in place (the gain is
    ``1 - inertia``); ``velocity_decay``: share of last turn's step carried over (momentum); ``recovery``: pull per
    turn towards the baseline; ``baseline_rate``: how fast the baseline follows confident readings;
    ``prior_baseline``: a new user's baseline; ``max_idle_steps``: most idle steps taken for skipped turns.
    """

    inertia: float = 0.6
    velocity_decay: float = 0.3
    recovery: float = 0.1
    baseline_rate: float = 0.05
    prior_baseline: tuple[float, float, float] = (0.0, 0.0, 0.0)
    max_idle_steps: int = 50

    def __post_init__(self) -> None:
        for name in ("inertia", "velocity_decay", "recovery"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if not 0.0 <= self.baseline_rate <= 1.0:
            raise ValueError(f"baseline_rate must be in [0, 1], got {self.baseline_rate}")
        if len(self.prior_baseline) != 3 or any(not -1.0 <= x <= 1.0 for x in self.prior_baseline):
            raise ValueError(f"prior_baseline must be 3 numbers in [-1, 1], got {self.prior_baseline}")
        if self.max_idle_steps < 0:
            raise ValueError(f"max_idle_steps must be >= 0, got {self.max_idle_steps}")
        object.__setattr__(self, "prior_baseline", tuple(float(x) for x in self.prior_baseline))

    @property
    def gain(self) -> float:
        """How far a fully confident reading pulls the state (``1 - inertia``); scaled by each reading's confidence."""
        return 1.0 - self.inertia

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prior_baseline": list(self.prior_baseline)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AffectDynamics:
        values = dict(raw)
        if "prior_baseline" in values:
            values["prior_baseline"] = tuple(values["prior_baseline"])
        return cls(**values)


@dataclass
class _UserAffect:
    baseline: np.ndarray
    trajectory: list[AffectState] = field(default_factory=list)


class AffectTracker:
    """Affect state per user id, updated turn by turn with ``AffectDynamics``; JSON-able for persistence.

    ``max_history`` bounds each user's kept trajectory (the oldest states are dropped; the dynamics only need the
    last one).
    """

    def __init__(self, dynamics: AffectDynamics | None = None, max_history: int = 500) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self.dynamics = dynamics or AffectDynamics()
        self.max_history = max_history
        self._users: dict[str, _UserAffect] = {}

    def users(self) -> list[str]:
        """User ids with a state, in order of first reading."""
        return list(self._users)

    def state(self, user_id: str) -> AffectState | None:
        """The user's current state, ``None`` before the first reading."""
        user = self._users.get(user_id)
        return user.trajectory[-1] if user and user.trajectory else None

    def trajectory(self, user_id: str) -> list[AffectState]:
        """The user's states, oldest first (empty for an unknown user)."""
        user = self._users.get(user_id)
        return list(user.trajectory) if user else []

    def baseline(self, user_id: str) -> tuple[float, float, float]:
        """The user's baseline (long-run mood); ``prior_baseline`` for an unknown user."""
        user = self._users.get(user_id)
        b = user.baseline if user else np.asarray(self.dynamics.prior_baseline)
        return (float(b[0]), float(b[1]), float(b[2]))

    def reset(self, user_id: str) -> None:
        """Forget the user (state, trajectory and baseline)."""
        self._users.pop(user_id, None)

    def update(self, user_id: str, observation: AffectObservation) -> AffectState:
        """Fold one turn's reading into the user's state and return the new state.

        Raises:
            ValueError: ``observation.turn`` is not after the user's last turn.
        """
        user = self._users.get(user_id)
        if user is None or not user.trajectory:
            user = self._users.setdefault(user_id, _UserAffect(np.asarray(self.dynamics.prior_baseline, np.float64)))
            turn = 0 if observation.turn is None else int(observation.turn)
            c = observation.confidence
            self._step_baseline(user, observation.vector, c)
            o = observation.vector
            first = AffectState(*self._unpack(o), (0.0, 0.0, 0.0), turn, c, True, observation.time)
            self._append(user, first)
            logger.debug("affect of %s initialised at turn %d: %s", user_id, turn, first.to_dict())
            return first
        last = user.trajectory[-1]
        turn = last.turn + 1 if observation.turn is None else int(observation.turn)
        if turn <= last.turn:
            raise ValueError(f"turn {turn} for user {user_id!r} is not after its last turn {last.turn}")
        skipped = min(turn - last.turn - 1, self.dynamics.max_idle_steps)
        for _ in range(skipped):
            self._append(user, self._step(user, None, 0.0, user.trajectory[-1].turn + 1, None))
        state = self._step(user, observation.vector, observation.confidence, turn, observation.time)
        self._append(user, state)
        return state

    def idle(self, user_id: str, turns: int = 1) -> AffectState:
        """Advance the user ``turns`` turns with no reading (momentum and recovery only); returns the last state.

        Raises:
            KeyError: the user has no state yet.
        """
        user = self._users.get(user_id)
        if user is None or not user.trajectory:
            raise KeyError(f"no affect state for user {user_id!r}: update it with a reading first")
        for _ in range(turns):
            self._append(user, self._step(user, None, 0.0, user.trajectory[-1].turn + 1, None))
        return user.trajectory[-1]

    # -- the update ------------------------------------------------------------------------------------

    @staticmethod
    def _unpack(vector: np.ndarray) -> tuple[float, float, float]:
        return (float(vector[0]), float(vector[1]), float(vector[2]))

    def _step_baseline(self, user: _UserAffect, o: np.ndarray, c: float) -> None:
        user.baseline = user.baseline + self.dynamics.baseline_rate * c * (o - user.baseline)

    def _step(self, user: _UserAffect, o: np.ndarray | None, c: float, turn: int, time: float | None) -> AffectState:
        dyn = self.dynamics
        last = user.trajectory[-1]
        s, v = last.vector, np.asarray(last.velocity, np.float64)
        pull = np.zeros(3) if o is None else dyn.gain * c * (o - s)
        proposed = dyn.velocity_decay * v + pull - dyn.recovery * (s - user.baseline)
        new = np.clip(s + proposed, -1.0, 1.0)
        if o is not None:
            self._step_baseline(user, o, c)
        confidence = dyn.inertia * last.confidence + (1.0 - dyn.inertia) * c
        return AffectState(*self._unpack(new), self._unpack(new - s), turn, float(confidence), o is not None, time)

    def _append(self, user: _UserAffect, state: AffectState) -> None:
        user.trajectory.append(state)
        if len(user.trajectory) > self.max_history:
            del user.trajectory[: len(user.trajectory) - self.max_history]

    # -- persistence -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the dynamics, ``max_history`` and per user the baseline and the trajectory."""
        return {
            "dynamics": self.dynamics.to_dict(),
            "max_history": self.max_history,
            "users": {
                uid: {"baseline": [float(x) for x in u.baseline], "trajectory": [s.to_dict() for s in u.trajectory]}
                for uid, u in self._users.items()
            },
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AffectTracker:
        tracker = cls(AffectDynamics.from_dict(raw.get("dynamics", {})), int(raw.get("max_history", 500)))
        for uid, user in raw.get("users", {}).items():
            tracker._users[uid] = _UserAffect(
                np.asarray(user["baseline"], np.float64), [AffectState.from_dict(s) for s in user["trajectory"]]
            )
        return tracker


#: Smallest change over the window that ``describe_trajectory`` calls a movement.
TREND_THRESHOLD: Final = 0.1
_MOVES: Final[dict[str, tuple[str, str]]] = {
    "valence": ("mood lifting", "mood sinking"),
    "arousal": ("getting more activated", "calming down"),
    "dominance": ("feeling more in control", "feeling less in control"),
}


def describe_trajectory(states: Sequence[AffectState], window: int = 3) -> str:
    """One readable sentence about the last ``window`` states, for the tree and the demo.

    E.g. ``"mood lifting over the last 3 turns: valence -0.50 → -0.10; calming down: arousal +0.60 → +0.20"``.
    A dimension moves when it changes by at least ``TREND_THRESHOLD`` between the first and last state of the
    window; with none moving the mood is ``steady``.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 states, got {window}")
    if not states:
        return "no affect readings yet"
    last = states[-1]
    if len(states) == 1:
        return (
            f"one reading so far (turn {last.turn}): valence {last.valence:+.2f}, arousal {last.arousal:+.2f}, "
            f"dominance {last.dominance:+.2f}"
        )
    recent = list(states[-window:])
    first = recent[0]
    span = f"over the last {last.turn - first.turn + 1} turns"
    moves = [
        (_MOVES[name][0 if b > a else 1], name, a, b)
        for name in DIMENSIONS
        for a, b in [(getattr(first, name), getattr(last, name))]
        if abs(b - a) >= TREND_THRESHOLD
    ]
    if not moves:
        return (
            f"mood steady {span}: valence {last.valence:+.2f}, arousal {last.arousal:+.2f}, "
            f"dominance {last.dominance:+.2f}"
        )
    phrase, name, a, b = moves[0]
    parts = [f"{phrase} {span}: {name} {a:+.2f} → {b:+.2f}"]
    parts += [f"{phrase}: {name} {a:+.2f} → {b:+.2f}" for phrase, name, a, b in moves[1:]]
    return "; ".join(parts)

"""ESConv support dialogues: reading the JSONL, the supporter messages a strategy planner or a responder is scored
on, and the strategy scores at two levels. Shared by
``affectlens eval strategy|dialogue`` and ``scripts/train_strategy_planner.py``, so the numbers agree.

Two levels of scoring, both reported:

* per supporter **message** (``strategy_examples`` / ``score_strategies``): the dialogue before each supporter
  message -> that message's strategy; top-1 accuracy and macro-F1, the literature's comparison point;
* per supporter **turn** (``turn_examples`` / ``score_turns``): a turn is the run of consecutive supporter messages
  after the seeker spoke and may combine strategies (16% of ESConv turns have more than one message); the
  dialogue before the turn's first message -> the *set* of distinct strategies of its messages. ``turn_top1_accuracy``
  counts the planner's top strategy as right when it is one of them. This is the planner's real task: it plans a
  whole turn, once per seeker message.

Files: JSONL, one dialogue per line, ``{"emotion_type", "problem_type", "situation", "dialog": [{"text", "speaker":
"usr"|"sys", "strategy" (supporter messages)}]}`` (the standard split), or the original release's one JSON list of
dialogues (``ESConv.json``, ``FailedESConv.json``: ``content``, ``speaker`` seeker|supporter, ``annotation.strategy``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from affectlens.errors import MediaError
from affectlens.labels import ESCONV_STRATEGIES
from fusion.strategy import Message, previous_supporter_turn

SPEAKERS: Final = ("usr", "sys")


@dataclass(frozen=True)
class StrategyExample:
    """A supporter message with a known strategy, after the seeker has spoken: the dialogue before it, its
    reference strategy, and whether it opens a supporter turn (the seeker spoke just before)."""

    dialogue: tuple[Message, ...]
    strategy: str
    first: bool


@dataclass(frozen=True)
class TurnExample:
    """A supporter turn (consecutive supporter messages right after a seeker message): the dialogue before its first
    message and the distinct ``ESCONV_STRATEGIES`` of its messages, in order of use (the first message's first)."""

    dialogue: tuple[Message, ...]
    strategies: tuple[str, ...]


@dataclass(frozen=True)
class ReplySample:
    """The first message of a supporter turn: the dialogue before the seeker's last message (``history``), that
    message (``seeker``) and the supporter's message (``reference``) with its strategy (``""`` when it has none);
    ``dialogue`` is the dialogue's index."""

    dialogue: int
    history: tuple[Message, ...]
    seeker: str
    reference: str
    strategy: str = ""


#: ESConv's original release (``ESConv.json``, ``FailedESConv.json``): its speaker names and the strategy names of its
#: earlier annotation rounds, mapped onto ``SPEAKERS`` and ``ESCONV_STRATEGIES``.
RAW_SPEAKERS: Final[dict[str, str]] = {"seeker": "usr", "speaker": "usr", "supporter": "sys", "listener": "sys"}
RAW_STRATEGIES: Final[dict[str, str]] = {
    **{s: s for s in ESCONV_STRATEGIES},
    "Questions": "Question",
    "Other": "Others",
    "Direct Guidance": "Providing Suggestions",
    "Approval and Reassurance": "Affirmation and Reassurance",
}


def _message(raw: Any, where: str, path: Path) -> Message:
    """One dialog entry, in the standard split's format (``text``, ``speaker`` usr|sys, ``strategy``) or the original
    release's (``content``, ``speaker`` seeker|supporter, ``annotation.strategy``; older strategy names mapped)."""
    if not isinstance(raw, dict):
        raise MediaError(str(path), f"{where}: a dialog entry is not an object")
    given = raw.get("speaker")
    speaker = RAW_SPEAKERS.get(given, given) if isinstance(given, str) else given
    text = raw.get("text", raw.get("content"))
    strategy = raw.get("strategy")
    annotation = raw.get("annotation")
    if strategy is None and isinstance(annotation, dict):
        strategy = annotation.get("strategy")
    if speaker not in SPEAKERS:
        raise MediaError(
            str(path), f"{where}: speaker {given!r} is not one of {', '.join(SPEAKERS)} (or {', '.join(RAW_SPEAKERS)})"
        )
    if not isinstance(text, str):
        raise MediaError(str(path), f"{where}: no text")
    if strategy is not None and not isinstance(strategy, str):
        raise MediaError(str(path), f"{where}: strategy {strategy!r} is not a string")
    return Message(speaker, text.strip(), (RAW_STRATEGIES.get(strategy, strategy),) if strategy else ())


def read_dialogues(path: str | Path, limit: int | None = None) -> list[list[Message]]:
    """The dialogues of an ESConv file (the first ``limit`` of them), as ``Message`` lists: JSONL, one dialogue per
    line (the standard split), or one JSON list of dialogues (the original release, ``ESConv.json``; entries in
    either format, see ``_message``).

    Blank lines are skipped. A missing, empty or unreadable file, or a line that is not a dialogue, is a
    ``MediaError`` naming the file (and the line or dialogue, and the turn).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(str(path), "file not found")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MediaError(str(path), f"not a UTF-8 text file ({exc})") from exc
    if content.lstrip().startswith("["):  # the original release: one JSON list
        try:
            items = json.loads(content)
        except json.JSONDecodeError as exc:
            raise MediaError(str(path), f"not JSON ({exc.msg}, line {exc.lineno})") from exc
        numbered = [(f"dialogue {k}", item) for k, item in enumerate(items, 1)]
    else:
        numbered = []
        for number, line in enumerate(content.splitlines(), 1):
            if limit is not None and len(numbered) >= limit:
                break
            if not line.strip():
                continue
            try:
                numbered.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise MediaError(str(path), f"line {number}: not JSON ({exc.msg})") from exc
    dialogues: list[list[Message]] = []
    for where, raw in numbered[:limit]:
        if not isinstance(raw, dict) or not isinstance(raw.get("dialog"), list):
            raise MediaError(str(path), f'{where}: not an ESConv dialogue (an object with a "dialog" list)')
        dialogues.append(
            [_message(turn, f"{where}, dialog entry {i}", path) for i, turn in enumerate(raw["dialog"], 1)]
        )
    if not dialogues:
        raise MediaError(str(path), "empty file (expected one ESConv dialogue per line)")
    return dialogues


def strategy_examples(dialogues: Sequence[Sequence[Message]]) -> list[StrategyExample]:
    """Every supporter message whose strategy is one of ``ESCONV_STRATEGIES``, once the seeker has spoken."""
    out = []
    for dialogue in dialogues:
        for i, message in enumerate(dialogue):
            before = tuple(dialogue[:i])
            strategy = message.strategies[0] if message.strategies else ""
            if message.speaker == "sys" and strategy in ESCONV_STRATEGIES and any(m.speaker == "usr" for m in before):
                out.append(StrategyExample(before, strategy, before[-1].speaker == "usr"))
    return out


def turn_examples(dialogues: Sequence[Sequence[Message]]) -> list[TurnExample]:
    """Every supporter turn that follows a seeker message and has at least one strategy of ``ESCONV_STRATEGIES``."""
    out = []
    for dialogue in dialogues:
        i = 0
        while i < len(dialogue):
            if dialogue[i].speaker != "sys" or i == 0 or dialogue[i - 1].speaker != "usr":
                i += 1
                continue
            j = i
            used: list[str] = []
            while j < len(dialogue) and dialogue[j].speaker == "sys":
                used.extend(s for s in dialogue[j].strategies if s in ESCONV_STRATEGIES)
                j += 1
            if used:
                out.append(TurnExample(tuple(dialogue[:i]), tuple(dict.fromkeys(used))))
            i = j
    return out


def load_split(path: str | Path) -> list[StrategyExample]:
    """``strategy_examples`` of every dialogue in an ESConv JSONL file."""
    return strategy_examples(read_dialogues(path))


def reply_samples(dialogues: Sequence[Sequence[Message]], per_dialogue: int) -> list[ReplySample]:
    """The first ``per_dialogue`` supporter turns of each dialogue that answer the seeker (a supporter message right
    after a seeker message, both with text), in order."""
    out = []
    for index, dialogue in enumerate(dialogues):
        taken = 0
        for i in range(1, len(dialogue)):
            if taken == per_dialogue:
                break
            seeker, reply = dialogue[i - 1], dialogue[i]
            if reply.speaker == "sys" and seeker.speaker == "usr" and seeker.text and reply.text:
                strategy = reply.strategies[0] if reply.strategies else ""
                out.append(ReplySample(index, tuple(dialogue[: i - 1]), seeker.text, reply.text, strategy))
                taken += 1
    return out


def macro_f1(truth: np.ndarray, predicted: np.ndarray, n: int) -> float:
    """F1 averaged over the classes ``0..n-1`` that occur in ``truth`` or ``predicted``."""
    scores = []
    for c in range(n):
        tp = np.sum((predicted == c) & (truth == c))
        denom = np.sum(predicted == c) + np.sum(truth == c)
        if denom:
            scores.append(2 * tp / denom)
    return float(np.mean(scores)) if scores else 0.0


def repetition_rate(chosen: Sequence[Sequence[str]], examples: Sequence[StrategyExample]) -> float:
    """Share of supporter turns (their first message, with a previous supporter turn) re-using a strategy of the
    previous supporter turn."""
    hits, total = 0, 0
    for strategies, example in zip(chosen, examples, strict=True):
        previous = previous_supporter_turn(example.dialogue)
        if example.first and previous:
            total += 1
            hits += any(s in previous for s in strategies)
    return hits / max(total, 1)


def distribution(strategies: Sequence[str]) -> dict[str, float]:
    """Share of each of ``ESCONV_STRATEGIES`` in ``strategies``, rounded to 4 places."""
    counts = Counter(strategies)
    return {s: round(counts[s] / max(len(strategies), 1), 4) for s in ESCONV_STRATEGIES}


def score_strategies(chosen: Sequence[Sequence[str]], examples: Sequence[StrategyExample]) -> dict[str, Any]:
    """Chosen strategies (the first is the top-1) against the references: n, accuracy, macro-F1, how often any chosen
    strategy is the reference, repetition rate, predicted distribution and mean strategies per turn."""
    y = np.array([ESCONV_STRATEGIES.index(e.strategy) for e in examples])
    top = np.array([ESCONV_STRATEGIES.index(c[0]) for c in chosen])
    return {
        "n": len(y),
        "accuracy": round(float((top == y).mean()), 4),
        "macro_f1": round(macro_f1(y, top, len(ESCONV_STRATEGIES)), 4),
        "any_chosen_accuracy": round(
            float(np.mean([e.strategy in c for c, e in zip(chosen, examples, strict=True)])), 4
        ),
        "repetition_rate": round(repetition_rate(chosen, examples), 4),
        "predicted_distribution": distribution([c[0] for c in chosen]),
        "mean_strategies_per_turn": round(float(np.mean([len(c) for c in chosen])), 3),
    }


def majority_strategy(sets: Sequence[Sequence[str]]) -> str:
    """The strategy in most of ``sets`` (each counted once per set; ties: the first in label order)."""
    counts = Counter(s for strategies in sets for s in dict.fromkeys(strategies))
    return max(ESCONV_STRATEGIES, key=counts.__getitem__)


def score_turns(chosen: Sequence[Sequence[str]], examples: Sequence[TurnExample]) -> dict[str, Any]:
    """Chosen strategies per supporter turn (the first is the top-1) against the turn's strategy set: n,
    ``turn_top1_accuracy`` (the top strategy is one of the turn's), ``any_chosen_in_set``, ``chosen_precision`` (mean
    share of the chosen strategies that the turn used), ``first_strategy_accuracy`` and ``first_strategy_macro_f1``
    (the top strategy against the turn's first message's strategy), the repetition rate (turns with a previous
    supporter turn whose chosen strategies re-use one of it), predicted distribution and mean strategies per turn."""
    sets = [set(e.strategies) for e in examples]
    top = [c[0] for c in chosen]
    y = np.array([ESCONV_STRATEGIES.index(e.strategies[0]) for e in examples])
    t = np.array([ESCONV_STRATEGIES.index(s) for s in top])
    hits, total = 0, 0
    for c, e in zip(chosen, examples, strict=True):
        previous = previous_supporter_turn(e.dialogue)
        if previous:
            total += 1
            hits += any(s in previous for s in c)
    return {
        "n": len(examples),
        "turn_top1_accuracy": round(float(np.mean([s in ref for s, ref in zip(top, sets, strict=True)])), 4),
        "any_chosen_in_set": round(
            float(np.mean([any(s in r for s in c) for c, r in zip(chosen, sets, strict=True)])), 4
        ),
        "chosen_precision": round(
            float(np.mean([sum(s in r for s in c) / len(c) for c, r in zip(chosen, sets, strict=True)])), 4
        ),
        "first_strategy_accuracy": round(float((t == y).mean()), 4),
        "first_strategy_macro_f1": round(macro_f1(y, t, len(ESCONV_STRATEGIES)), 4),
        "repetition_rate": round(hits / max(total, 1), 4),
        "multi_strategy_turns": round(float(np.mean([len(r) > 1 for r in sets])), 4),
        "predicted_distribution": distribution(top),
        "mean_strategies_per_turn": round(float(np.mean([len(c) for c in chosen])), 3),
    }

"""How many earlier turns the safety check should read: crisis support on real seekers' turns against the crisis
recall of the written history development set, per window (the table in ``docs/safety.md``, "Earlier turns").

Each ESConv dialogue of ``--dialogues`` (default ESConv valid; its seekers are nearly all not at risk) is read turn by
turn as a conversation reads it (each seeker message with the seeker's earlier ones); a turn gets crisis support
when ``fusion.safety.crisis_support`` holds (a crisis, or the follow-up after an earlier disclosure). Beside it,
``affectlens eval safety`` on ``--dev`` (default ``docs/safety-eval-history-dev.csv``) with the same detector.

    python scripts/measure_safety_history.py      # about 7 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.evaluation import evaluate_safety  # noqa: E402
from fusion.safety import RiskDetector, crisis_support  # noqa: E402

WINDOWS = (None, 4, 3, 2, 1)


class MessageMeaningOnly(RiskDetector):
    """Version 5's reading: the meaning reads the message only, the patterns every earlier turn."""

    def _meaning(self, *args: Any, **kwargs: Any) -> list[Any]:
        return [] if kwargs.get("turn") is not None else super()._meaning(*args, **kwargs)


def seeker_dialogues(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8") as f:
        return [[t["text"].strip() for t in json.loads(line)["dialog"] if t["speaker"] == "usr"] for line in f]


def supported_share(detector: RiskDetector, dialogues: list[list[str]]) -> tuple[float, int]:
    """Share of seeker turns answered with crisis support, and how many dialogues have at least one."""
    turns = supported = touched = 0
    for dialogue in dialogues:
        hits = [crisis_support(detector.assess(m, dialogue[:i])) for i, m in enumerate(dialogue)]
        turns, supported, touched = turns + len(hits), supported + sum(hits), touched + any(hits)
    return supported / max(turns, 1), touched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=Path, default=REPO.parent / "shared" / "data" / "esconv" / "valid.jsonl")
    parser.add_argument("--dev", type=Path, default=REPO / "docs" / "safety-eval-history-dev.csv")
    args = parser.parse_args()
    dialogues = seeker_dialogues(args.dialogues)
    print(f"{args.dialogues.name}: {len(dialogues)} dialogues, {sum(map(len, dialogues))} seeker turns")
    rows: list[tuple[str, RiskDetector]] = [
        ("patterns only, every turn", RiskDetector(semantic=False, history_turns=None)),
        ("meaning on the message only, patterns on every turn", MessageMeaningOnly(history_turns=None)),
    ]
    rows += [(f"both readers, {'every turn' if w is None else f'the latest {w}'}", RiskDetector(history_turns=w))
             for w in WINDOWS]  # fmt: skip
    for name, detector in rows:
        share, touched = supported_share(detector, dialogues)
        dev = evaluate_safety(args.dev, detector=detector)
        print(
            f"{name}: seeker turns with crisis support {share:.2%} (dialogues with any: {touched}); "
            f"{args.dev.name} recall {dev['recall']:.2f} precision {dev['precision']:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

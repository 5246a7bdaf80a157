"""Blind reads of replies, the method behind the template fixes in ``docs/dialogue-replies.md``.

``replies``: every turn of ``affectlens eval dialogue``'s sample (the first ``--limit`` dialogues, 3 supporter turns
each), with the reply the chosen responder gives and the tree's template, as JSON. Run it once per code state
(``git switch`` between them) to get the two sides of a comparison.

``sheet``: from two such files, a Markdown sheet of the turns (from row ``--from`` on) whose replies differ: the last
six messages, the person's message, and the two replies as A and B in a seeded random order; the key (which side is
A) goes to a separate JSON file the reader never sees. Also prints BLEU-2 / ROUGE-L of both sides on those rows.

``score``: once the reader has written ``turn,reply,problem,note`` verdicts for the sheet, the problems per side.

``single``: a sheet of one report's replies alone, rows ``--from`` to ``--to`` (a discovery read: what is still
wrong, before any change is written); the reader writes ``turn,problem,note``, and ``count`` totals the problems.

    python scripts/blind_read.py replies --data ../shared/data/esconv/valid.jsonl --limit 60 --out /tmp/old.json
    python scripts/blind_read.py replies --data ../shared/data/esconv/valid.jsonl --limit 60 --responder lm --out F
    python scripts/blind_read.py sheet /tmp/old.json /tmp/new.json --data ../shared/data/esconv/valid.jsonl \
        --limit 60 --from 60 --sheet /tmp/sheet.md --key /tmp/key.json
    python scripts/blind_read.py score /tmp/key.json /tmp/verdicts.csv
    python scripts/blind_read.py single /tmp/new.json --data ../shared/data/esconv/train.jsonl --limit 140 \
        --from 240 --to 300 --sheet /tmp/single.md
    python scripts/blind_read.py count /tmp/single-verdicts.csv

The sheets hold ESConv text (CC BY-NC 4.0): keep them out of the repository; the keys and verdicts hold none.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Seed of the A/B order (fixed: a sheet can be made again exactly).
SEED = 20261129
#: Messages of the conversation shown before the person's last one.
SHOWN_MESSAGES = 6


def replies(data: str, limit: int, responder: str, out: Path) -> dict[str, Any]:
    """Every turn of the eval sample with the ``responder``'s reply ("template" or "lm") and the tree's template."""
    from affectlens.evaluation import evaluate_dialogue, shipped_conversations

    conversations = shipped_conversations(lm=responder == "lm")
    report = evaluate_dialogue(data, limit=limit, conversations=conversations, examples=-1)
    out.write_text(json.dumps(report, indent=1))
    return report


def sheet(
    left: Path, right: Path, data: str, limit: int, start: int, sheet_path: Path, key_path: Path
) -> dict[str, dict[str, float]]:
    """Write the blind sheet and its key for rows ``start`` on where ``left`` and ``right`` differ; returns both
    sides' text scores on those rows."""
    from affectlens.text_metrics import text_scores

    samples, (a, b) = _reports(data, limit, left, right)
    rng = random.Random(SEED)
    parts: list[str] = []
    key: dict[str, dict[str, Any]] = {}
    for i, (sample, x, y) in enumerate(zip(samples, a, b, strict=True)):
        if i < start or x["reply"] == y["reply"]:
            continue
        flip = rng.random() < 0.5
        first, second = (y, x) if flip else (x, y)
        n = str(len(key) + 1)
        key[n] = {"turn": i, "A": "right" if flip else "left", "B": "left" if flip else "right"}
        lines = [f"## Turn {n}", "", *_messages(sample), f"Reply A: {first['reply']}", ""]
        parts.append("\n".join([*lines, f"Reply B: {second['reply']}", ""]))
    sheet_path.write_text("\n".join(parts))
    key_path.write_text(json.dumps(key, indent=1))
    references = [s.reference for s in samples[start:]]
    return {
        name: text_scores([r["reply"] for r in rows[start:]], references) for name, rows in (("left", a), ("right", b))
    }


def _reports(data: str, limit: int, *reports: Path) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """The eval sample's turns for ``--data``/``--limit`` and each report's rows, checked to follow them turn by
    turn."""
    from affectlens.evaluation import DIALOGUE_SAMPLE
    from fusion.esconv import read_dialogues, reply_samples

    samples = reply_samples(read_dialogues(data, limit), DIALOGUE_SAMPLE[1])
    rows = [json.loads(p.read_text())["examples"] for p in reports]
    for report, examples in zip(reports, rows, strict=True):
        if len(examples) != len(samples):
            raise SystemExit(f"{report} does not hold the {len(samples)} turns of --data/--limit")
        if any(x["seeker"] != sample.seeker for x, sample in zip(examples, samples, strict=True)):
            raise SystemExit(f"{report} does not follow --data/--limit")
    return samples, rows


def _problems(kinds: Counter[str]) -> int:
    """The verdicts that found a problem."""
    return sum(n for kind, n in kinds.items() if kind != "none")


def _messages(sample: Any) -> list[str]:
    """The last messages before the person's one and the person's one, as sheet lines."""
    lines = [
        f"- {'Seeker' if m.speaker == 'usr' else 'Supporter'}: {m.text}" for m in list(sample.history)[-SHOWN_MESSAGES:]
    ]
    return [*lines, f"- **Seeker (last message): {sample.seeker}**", ""]


def single(report: Path, data: str, limit: int, start: int, stop: int, sheet_path: Path) -> int:
    """Write a sheet of ``report``'s replies alone for rows ``start`` to ``stop``; returns the number of turns."""
    samples, (rows,) = _reports(data, limit, report)
    parts: list[str] = []
    for n, i in enumerate(range(start, min(stop, len(rows))), start=1):
        parts.append("\n".join([f"## Turn {n}", "", *_messages(samples[i]), f"Reply: {rows[i]['reply']}", ""]))
    sheet_path.write_text("\n".join(parts))
    return len(parts)


def count_problems(verdicts: Path) -> Counter[str]:
    """Verdicts of a single-reply read, by problem."""
    with verdicts.open(newline="") as f:
        return Counter(row["problem"].strip() for row in csv.DictReader(f))


def score(key_path: Path, verdicts: Path) -> dict[str, Counter[str]]:
    """Problems per side (``left``, ``right``) and kind, from the reader's verdicts and the sheet's key."""
    key = json.loads(key_path.read_text())
    found: dict[str, Counter[str]] = {"left": Counter(), "right": Counter()}
    with verdicts.open(newline="") as f:
        for row in csv.DictReader(f):
            side = key[row["turn"]][row["reply"].strip()]
            found[side][row["problem"].strip()] += 1
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("replies", help="every turn of the eval sample with its reply")
    run.add_argument("--data", required=True)
    run.add_argument("--limit", type=int, required=True, help="dialogues (3 turns each)")
    run.add_argument("--responder", choices=["template", "lm"], default="template")
    run.add_argument("--out", type=Path, required=True)
    make = sub.add_parser("sheet", help="the blind A/B sheet of the rows where two reports differ")
    make.add_argument("left", type=Path)
    make.add_argument("right", type=Path)
    make.add_argument("--data", required=True)
    make.add_argument("--limit", type=int, required=True)
    make.add_argument("--from", dest="start", type=int, default=0, help="first row of the check set")
    make.add_argument("--sheet", type=Path, required=True)
    make.add_argument("--key", type=Path, required=True)
    count = sub.add_parser("score", help="problems per side from the verdicts")
    count.add_argument("key", type=Path)
    count.add_argument("verdicts", type=Path)
    alone = sub.add_parser("single", help="a sheet of one report's replies alone (a discovery read)")
    alone.add_argument("report", type=Path)
    alone.add_argument("--data", required=True)
    alone.add_argument("--limit", type=int, required=True)
    alone.add_argument("--from", dest="start", type=int, default=0)
    alone.add_argument("--to", dest="stop", type=int, required=True)
    alone.add_argument("--sheet", type=Path, required=True)
    tally = sub.add_parser("count", help="problems of a single-reply read")
    tally.add_argument("verdicts", type=Path)
    args = parser.parse_args(argv)
    if args.command == "replies":
        report = replies(args.data, args.limit, args.responder, args.out)
        print(json.dumps({k: report[k] for k in ("n", "reply", "template_baseline")}))
    elif args.command == "sheet":
        scores = sheet(args.left, args.right, args.data, args.limit, args.start, args.sheet, args.key)
        print(f"{len(json.loads(args.key.read_text()))} turns differ; scores on the rows: {json.dumps(scores)}")
    elif args.command == "single":
        print(f"{single(args.report, args.data, args.limit, args.start, args.stop, args.sheet)} turns")
    elif args.command == "count":
        kinds = count_problems(args.verdicts)
        print(f"{_problems(kinds)} of {sum(kinds.values())} with a problem {dict(kinds)}")
    else:
        found = score(args.key, args.verdicts)
        for side, kinds in found.items():
            print(f"{side}: {_problems(kinds)} with a problem {dict(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

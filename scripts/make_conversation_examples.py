"""Two multi-turn conversations through ``affectlens.conversation.Conversation`` with the shipped models, kept in
``docs/examples/conversations/``: each turn's tree, strategies (with why), affect trajectory and reply.

The user messages are written for this example (not taken from a dataset); the second conversation adds a voice
note from RAVDESS actor 23 (held out of the speech model's training) and the demo portrait on some turns, and
turns towards a crisis, to show the safety path.

    python scripts/make_conversation_examples.py                            # the default responder
    python scripts/make_conversation_examples.py --responder lm --out DIR   # the compact LM writes the replies
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.conversation import Conversation, Turn  # noqa: E402
from demo.samples import PORTRAIT  # noqa: E402

OUT = REPO / "docs" / "examples" / "conversations"
RAVDESS = REPO.parent / "shared" / "data" / "ravdess_speech"

DRIVING: list[dict[str, Any]] = [
    {"text": "Hi. I failed my driving test again today."},
    {"text": "It's the third time. I studied so hard and I still panicked at the roundabout."},
    {"text": "My dad keeps saying I'm useless with cars."},
    {"text": "Maybe I should just give up on driving."},
    {"text": "I passed my math exam last week though, so I'm not hopeless at everything."},
    {"text": "Do you think I should book another driving test?"},
    {"text": "Thanks. I think I'll ask my aunt to practise roundabouts with me."},
]
NIGHT: list[dict[str, Any]] = [
    {"text": "I got the job offer today!", "image": str(PORTRAIT)},
    {"text": "But it means moving away from my friends.", "audio": str(RAVDESS / "Actor_23/03-01-04-02-01-01-23.flac")},
    {"text": "I haven't been sleeping well for weeks, everything feels heavy."},
    {"text": "Honestly you're the only one I can talk to these days."},
    {"text": "Sometimes I think everyone would be better off without me."},
    {"text": "I'm at home. My sister is in the next room."},
]


def transcript(name: str, turns: list[Turn]) -> str:
    lines = [f"# Conversation: {name}", ""]
    for t in turns:
        value = t.tree.emotion.value if isinstance(t.tree.emotion.value, dict) else {}
        lines += [
            f"**Turn {t.index}** — user: {t.text!r}"
            + (f" (+ {', '.join(Path(s).name for s in t.sources)})" if t.sources else ""),
            "",
            f"- emotion: {value.get('state')} ({t.tree.emotion.confidence:.2f}); agreement: {value.get('agreement')}",
            "- strategies: " + "; ".join(f"{s} ({p:.2f}: {w})" for s, w, p in t.strategies),
            f"- affect: {t.trajectory}"
            + (
                f" — state V {t.affect.valence:+.2f} A {t.affect.arousal:+.2f} D {t.affect.dominance:+.2f}"
                if t.affect
                else ""
            ),
            f"- recollection: {t.recollection or '-'}",
            f"- safety: {json.dumps(getattr(t.tree, 'safety', None)) if getattr(t.tree, 'safety', None) else '-'}",
            f"- reply ({t.reply_source}, {t.seconds:.1f} s): **{t.reply}**",
            *([f"- refused first: {'; '.join(t.refused)}"] if t.refused else []),
            "",
            "<details><summary>tree</summary>",
            "",
            "```",
            t.tree.render(),
            "```",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the transcripts (default: %(default)s)")
    parser.add_argument(
        "--responder", choices=["default", "lm", "template"], default="default",
        help="who writes the replies: Conversation's default, the compact LM (build_lm_responder) or the templates",
    )  # fmt: skip
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO.parent)
    responder: Any = None
    if args.responder == "lm":
        from affectlens.conversation import build_lm_responder

        responder = build_lm_responder()
    elif args.responder == "template":
        from affectlens.conversation import TemplateResponder

        responder = TemplateResponder()
    for name, script in (("driving-test", DRIVING), ("good-news-heavy-night", NIGHT)):
        chat = Conversation(user_id=name, responder=responder)
        for message in script:
            turn = chat.send(message["text"], image=message.get("image"), audio=message.get("audio"))
            print(f"{name} [{turn.index}] {turn.reply_source}: {turn.reply}")
        (out / f"{name}.json").write_text(json.dumps(chat.to_dict(), indent=2, ensure_ascii=False) + "\n")
        (out / f"{name}.md").write_text(transcript(name, chat.turns))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

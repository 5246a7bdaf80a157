"""Latency of one Conversation turn on CPU: tree + strategy plan + affect state + memory + a 40-token LM reply.

Baseline, measured in the same run: the tree alone for the same text (``Analyzer().analyze(text=...)``). The reply
is forced to generate up to 40 tokens (``build_lm_responder()``, the reply LoRA swapped in for each reply). One
warm-up turn loads every model (printed apart); then the median of the next turns. Goal: a full turn < 8 s.

    python benchmarks/conversation_turn.py [--turns 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

TEXTS = (
    "Hi. I failed my driving test again today.",
    "It's the third time. I studied so hard and I still panicked at the roundabout.",
    "My dad keeps saying I'm useless with cars.",
    "Maybe I should just give up on driving.",
    "I passed my math exam last week though, so I'm not hopeless at everything.",
    "Do you think I should book another driving test?",
    "Thanks, that actually helps a bit.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    from affectlens import Analyzer
    from affectlens.conversation import Conversation, build_lm_responder

    analyzer = Analyzer()
    t0 = time.perf_counter()
    responder = build_lm_responder()
    responder.max_new_tokens = 40
    chat = Conversation(analyzer=analyzer, responder=responder)
    chat.send("Hello.")
    print(f"warm-up turn (loads the text model, planner, LM, sentence encoder): {time.perf_counter() - t0:.2f} s")
    full, tree_only = [], []
    for text in TEXTS[: args.turns]:
        t = time.perf_counter()
        analyzer.analyze(text=text)
        tree_only.append(time.perf_counter() - t)
        turn = chat.send(text)
        full.append(turn.seconds)
        print(f"  turn {turn.index}: {turn.seconds:.2f} s ({turn.reply_source}); tree alone {tree_only[-1]:.2f} s")
    f, b = statistics.median(full), statistics.median(tree_only)
    print(
        f"median full turn {f:.2f} s (goal < 8 s: {'met' if f < 8 else 'missed'}); tree alone {b:.2f} s; ratio {f / b:.1f}x"
    )
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()

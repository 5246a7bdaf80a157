"""Compact LM speed on CPU: SmolLM2-135M-Instruct loaded from its GGUF vs from the safetensors cache, time to
first token for a ~150-token prompt, and a 40-token greedy generation with and without an 8-token prefix.

Baseline: the first-run load (dequantise the GGUF, write the float32 cache, read it), measured in the same run
into a temporary cache root, so the user cache is left alone. Then the cached load, the one every later run
pays, in this process and in a fresh Python process (imports included: what a new run really waits; the goal
is judged on that). Generation timings are the median of ``--repeat`` runs after one warm-up call (the first
forward pass also pages the weights in; it is printed separately). Generation is forced to 40 tokens (no stop
token). Other work on the machine slows every number: the load average is printed at the start and the end.

Goals: cached load < 5 s, time to first token < 1 s, 40 tokens < 6 s (with and without the prefix).

    python benchmarks/lm_speed.py [--repeat 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from affectlens import weights
from affectlens.errors import WeightsError
from affectlens.registry import create_language_model
from fusion.lm import DEFAULT_LM, PREFIX_PLACEHOLDER, CompactLM, GenerationResult

REPO = Path(__file__).resolve().parents[1]
GOAL_LOAD_S, GOAL_FIRST_TOKEN_S, GOAL_40_TOKENS_S = 5.0, 1.0, 6.0
NEW_TOKENS, PREFIX_TOKENS = 40, 8

MESSAGES = [
    {"role": "system", "content": "You are AffectLens. Explain how a person seems to feel, briefly and kindly."},
    {
        "role": "user",
        "content": f"Signals: {PREFIX_PLACEHOLDER}\n"
        "Face: brows lowered, lip corners down, gaze on the floor, AU4 and AU15 for 3 of 4 s; sadness 0.58, neutral 0.21.\n"
        "Voice: low flat pitch, slow rate, two long pauses, soft; sadness 0.61, neutral 0.22.\n"
        'Words: "I just found out I did not get the job. I really thought this one would work out."\n'
        "In two sentences, how does the speaker feel, and which signals show it?",
    },
]


def load_seconds(cache_root: str) -> tuple[float, CompactLM]:
    started = time.perf_counter()
    lm = create_language_model(DEFAULT_LM, cache_root=cache_root)
    return time.perf_counter() - started, lm


FRESH_LOAD = """
import json, sys, time
started = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
from affectlens.registry import create_language_model
imported = time.perf_counter()
create_language_model(sys.argv[3], cache_root=sys.argv[1])
print(json.dumps({"import_s": imported - started, "load_s": time.perf_counter() - imported}))
"""


def fresh_process_load(cache_root: str) -> tuple[float, float]:
    """Import and cached-load seconds of a new Python process (same threads as this one)."""
    argv = [sys.executable, "-c", FRESH_LOAD, cache_root, str(torch.get_num_threads()), DEFAULT_LM]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    return float(timings["import_s"]), float(timings["load_s"])


def run(lm: CompactLM, repeat: int, prefix: torch.Tensor | None) -> tuple[float, float, GenerationResult]:
    """Median time to first token and total seconds of a forced 40-token generation."""
    results = [
        lm.generate(MESSAGES, max_new_tokens=NEW_TOKENS, prefix_embeds=prefix, stop_token_ids=()) for _ in range(repeat)
    ]
    first = statistics.median(r.time_to_first_token_s for r in results)
    total = statistics.median(r.total_s for r in results)
    return first, total, results[-1]


def verdict(value: float, goal: float) -> str:
    return f"goal < {goal:g} s: {'met' if value < goal else 'NOT met'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        found = weights.locate(DEFAULT_LM)
    except WeightsError as exc:
        print(exc, file=sys.stderr)
        return 2
    import transformers  # imported once here so neither load below pays for it

    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{DEFAULT_LM}: {found.path.name} ({found.path.stat().st_size / 1e6:.0f} MB); torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {load_avg:.2f} at start"
    )
    with tempfile.TemporaryDirectory(prefix="affectlens-lm-bench-") as cache_root:
        gguf_s, lm = load_seconds(cache_root)
        del lm
        fresh_import_s, fresh_load_s = fresh_process_load(cache_root)
        cached_s, lm = load_seconds(cache_root)

        ids = lm.chat_ids(MESSAGES)
        table = lm.model.get_input_embeddings().weight
        prefix = torch.randn(PREFIX_TOKENS, lm.hidden_size, generator=torch.Generator().manual_seed(0))
        prefix = prefix * float(table.detach().std())  # the scale of real token embeddings
        warm = lm.generate(MESSAGES, max_new_tokens=1)
        plain_first, plain_total, plain = run(lm, args.repeat, None)
        prefix_first, prefix_total, soft = run(lm, args.repeat, prefix)

    print(f"load, first run (dequantise GGUF + write cache + read): {gguf_s:6.2f} s   (baseline)")
    fresh_s = fresh_import_s + fresh_load_s
    print(f"load, from the safetensors cache, in this process:    {cached_s:6.2f} s   {gguf_s / cached_s:.1f}x faster")
    print(
        f"load, from the cache, fresh process (imports {fresh_import_s:.2f} s + load {fresh_load_s:.2f} s): "
        f"{fresh_s:.2f} s   {gguf_s / fresh_s:.1f}x faster   {verdict(fresh_s, GOAL_LOAD_S)}"
    )
    print(f"prompt: {len(ids) - 1} tokens (+{PREFIX_TOKENS} soft tokens at the placeholder when a prefix is given)")
    print(f"first call after loading (pages the weights in): time to first token {warm.time_to_first_token_s:.2f} s")
    print(f"median of {args.repeat} runs, greedy, {NEW_TOKENS} new tokens forced:")
    for label, first, total in (
        ("no prefix      ", plain_first, plain_total),
        (f"{PREFIX_TOKENS}-token prefix", prefix_first, prefix_total),
    ):
        print(
            f"  {label}: time to first token {first:5.2f} s ({verdict(first, GOAL_FIRST_TOKEN_S)}); "
            f"{NEW_TOKENS} tokens {total:5.2f} s, {NEW_TOKENS / total:4.1f} tok/s ({verdict(total, GOAL_40_TOKENS_S)})"
        )
    print(
        f"  prefix/no-prefix time ratio: first token {prefix_first / plain_first:.2f}x, total {prefix_total / plain_total:.2f}x"
    )
    print(f"reply without prefix: {plain.text[:160]!r}")
    print(f"reply with a random prefix: {soft.text[:160]!r}")
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load_avg:.2f} at the end (other work on this machine slows every number above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

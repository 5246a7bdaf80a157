"""Train the reply topic check (``fusion.reply_fit``): does a reply answer this conversation?

1. ESConv train: every supporter message that answers a seeker message (``fusion.esconv.reply_samples``) is a
   positive, read against the dialogue up to it (the seeker's last message and the last ``RECENT_MESSAGES``
   messages, ``recent_text``); ``--negatives`` supporter messages of *other* train dialogues, drawn at random, read
   against the same dialogue, are negatives. All-MiniLM-L6-v2 embeds every text (the shipped ``minilm-l6`` group;
   cached under ``~/.cache/affectlens/train/reply-fit/``); ``fusion.safety_semantic.fit_classifier`` trains the
   one-hidden-layer classifier over ``pair_features`` (hidden 256, GELU, dropout 0.2, AdamW 1e-3, weight decay
   1e-4, ``--steps`` steps of 1,024 rows, seed 0; each class weighs half).
2. The threshold, on ESConv valid only: the largest of a 0.01 grid that refuses at most ``MAX_REFUSED`` (5%) of
   the valid supporters' own replies. A refused LM reply costs little (the tree's template answers instead), a
   refused good reply is the price of catching foreign ones.
3. ESConv test, scored once: the real replies refused, replies of other test dialogues (one per turn, drawn with a
   fixed seed) refused, and the ROC AUC between the two; and, for the record, the written examples of
   ``EXAMPLES`` (never used for a choice).

Writes ``weights/reply-fit/reply-fit.safetensors`` + ``.json`` (card: threshold, choices, metrics).

    python scripts/train_reply_fit.py      # about 10 minutes on 2 cores, most of it the embeddings
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusion.esconv import ReplySample, read_dialogues, reply_samples  # noqa: E402
from fusion.memory import sentence_embedder  # noqa: E402
from fusion.reply_fit import MAX_REFUSED, RECENT_MESSAGES, ReplyFitModel, pair_features, recent_text  # noqa: E402
from fusion.safety_semantic import classifier_probabilities, fit_classifier  # noqa: E402
from fusion.strategy import Message  # noqa: E402

DEFAULT_ESCONV = REPO.parent / "shared" / "data" / "esconv"
DEFAULT_OUT = REPO / "weights" / "reply-fit" / "reply-fit.safetensors"
CACHE = Path.home() / ".cache" / "affectlens" / "train" / "reply-fit"
THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(1, 100))
#: Written replies with what a reader would say of them (the first is the LM's, from an example conversation about a
#: driving test failed for the third time, against a shorter dialogue than the one it answered); reported, never
#: used for a choice.
EXAMPLES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("Hi. I failed my driving test again today.", "I'm sorry to hear that. How are you feeling about it?",
      "It's the third time. I studied so hard and I still panicked at the roundabout."),
     "I think it would be helpful if you could share what you know about your job as well. What kind of jobs do "
     "you enjoy doing?", "off topic"),
    (("Hi. I failed my driving test again today.", "I'm sorry to hear that. How are you feeling about it?",
      "It's the third time. I studied so hard and I still panicked at the roundabout."),
     "It sounds like the roundabout really rattled you. What happened there?", "on topic"),
    (("I got the job offer today!", "Congratulations! How do you feel about it?",
      "But it means moving away from my friends."),
     "Moving away from your friends is hard, even for a good reason.", "on topic"),
    (("I got the job offer today!", "Congratulations! How do you feel about it?",
      "But it means moving away from my friends."),
     "Have you tried making a budget for your groceries?", "off topic"),
    (("I haven't been sleeping well for weeks, everything feels heavy.",),
     "How are you feeling right now?", "generic"),
)  # fmt: skip


def contexts(samples: list[ReplySample]) -> tuple[list[str], list[str]]:
    """(last messages, recent dialogues) of the samples, as ``recent_text`` reads a conversation."""
    pairs = [recent_text([*s.history, Message("usr", s.seeker)]) for s in samples]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def cached_embed(texts: list[str], name: str, embed: Any) -> np.ndarray:
    """Embeddings of ``texts``, cached by their hash."""
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{key}.npy"
    if path.is_file():
        return np.asarray(np.load(path), np.float32)
    start = time.perf_counter()
    vectors = np.asarray(embed(texts), np.float32)
    print(f"  embedded {len(texts)} {name} texts in {time.perf_counter() - start:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def split_vectors(samples: list[ReplySample], name: str, embed: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    last, recent = contexts(samples)
    return (
        cached_embed(last, f"{name}-last", embed), cached_embed(recent, f"{name}-recent", embed),
        cached_embed([s.reference for s in samples], f"{name}-reply", embed),
    )  # fmt: skip


def foreign(samples: list[ReplySample], k: int, rng: np.random.Generator) -> np.ndarray:
    """(N, k) indices of replies from other dialogues than each sample's."""
    dialogue = np.array([s.dialogue for s in samples])
    out = rng.integers(len(samples), size=(len(samples), k))
    same = dialogue[out] == dialogue[:, None]
    while same.any():
        out[same] = rng.integers(len(samples), size=int(same.sum()))
        same = dialogue[out] == dialogue[:, None]
    return out


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC AUC: the chance a positive scores above a negative (ties half), by the rank-sum statistic."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))  # ties share their average rank
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--esconv", type=Path, default=DEFAULT_ESCONV, help="folder with train/valid/test.jsonl")
    parser.add_argument("--negatives", type=int, default=3, help="foreign replies per real one in training")
    parser.add_argument("--steps", type=int, default=3000, help="AdamW steps of 1,024 rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    start = time.perf_counter()
    embed = sentence_embedder()
    split = {
        name: reply_samples(read_dialogues(args.esconv / f"{name}.jsonl"), 10**6) for name in ("train", "valid", "test")
    }
    print({name: len(s) for name, s in split.items()}, "supporter replies", flush=True)
    vectors = {name: split_vectors(samples, name, embed) for name, samples in split.items()}

    rng = np.random.default_rng(0)
    last, recent, reply = vectors["train"]
    others = foreign(split["train"], args.negatives, rng)
    rows = [pair_features(last, recent, reply)]
    for k in range(args.negatives):
        rows.append(pair_features(last, recent, reply[others[:, k]]))
    x = np.concatenate(rows)
    y = np.concatenate([np.ones(len(reply)), np.zeros(len(reply) * args.negatives)]).astype(np.float32)
    fit_start = time.perf_counter()
    layers = fit_classifier(x, y, steps=args.steps, batch_size=1024, seed=0)
    print(f"  trained on {len(y)} pairs in {time.perf_counter() - fit_start:.0f} s", flush=True)

    def scores(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """p(belongs) of the split's real replies, and of one foreign reply per turn."""
        a, b, c = vectors[name]
        other = foreign(split[name], 1, np.random.default_rng(seed))[:, 0]
        return (
            classifier_probabilities(pair_features(a, b, c), layers),
            classifier_probabilities(pair_features(a, b, c[other]), layers),
        )

    valid_real, valid_foreign = scores("valid", 1)
    threshold = max(t for t in THRESHOLDS if np.mean(valid_real < t) <= MAX_REFUSED)
    test_real, test_foreign = scores("test", 2)

    def figures(real: np.ndarray, other: np.ndarray) -> dict[str, float]:
        return {
            "real_refused": round(float(np.mean(real < threshold)), 4),
            "foreign_refused": round(float(np.mean(other < threshold)), 4),
            "auc": round(auc(real, other), 4),
            "n": len(real),
        }

    model = ReplyFitModel(*layers, threshold=threshold, embed=embed)
    written = []
    for turns, text, kind in EXAMPLES:
        dialogue = [Message("usr" if i % 2 == 0 else "sys", t) for i, t in enumerate(turns)]
        p = model.fits(dialogue, text)
        written.append({"reply": text, "reader": kind, "p": round(p, 3), "refused": p < threshold})
    card: dict[str, Any] = {
        "task": "p(the reply answers this conversation): the compact LM's replies under the threshold are refused",
        "features": "fusion.reply_fit.pair_features over all-MiniLM-L6-v2 embeddings of the last seeker message, "
        f"the last {RECENT_MESSAGES} messages (newest first) and the reply",
        "training": {
            "data": "ESConv train: every supporter message answering a seeker message (positive) and "
            f"{args.negatives} supporter messages of other train dialogues per positive (negative)",
            "positives": len(reply), "negatives": len(reply) * args.negatives, "hidden": 256, "steps": args.steps,
            "batch_size": 1024, "seed": 0,
        },
        "threshold_rule": f"the largest of a 0.01 grid refusing at most {MAX_REFUSED:.0%} of ESConv valid supporters' "
        "own replies",
        "valid": figures(valid_real, valid_foreign),
        "test": figures(test_real, test_foreign),
        "written_examples": written,
        "licence": "Apache-2.0; trained on ESConv (CC BY-NC 4.0, academic research only)",
        "command": "python scripts/train_reply_fit.py",
    }  # fmt: skip
    replace(model, card=card).save(args.out)
    print(json.dumps({k: card[k] for k in ("valid", "test", "written_examples")}, indent=1))
    print(f"threshold {threshold}; wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

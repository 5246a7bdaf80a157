"""Train the reply LoRA: SmolLM2-135M-Instruct learns to answer like ESConv supporters from the prompt the
``LMResponder`` builds (``affectlens.conversation.reply_prompt``): the tree's feeling and need, the two messages
before the seeker's last, the seeker's words, a retrieved ESConv exemplar of the strategy (half of the prompts; the
other half without, so replies work with and without a bank) and the strategy as an instruction.

Data: ``../shared/data/esconv/train.jsonl`` (the first message of every supporter turn that answers the seeker,
5-60 words; the feeling and need from our own tree of the seeker's message; exemplars retrieved from train,
never from the same dialogue). Validation: ESConv valid, two turns from each of the first ``--valid-dialogues``
dialogues: loss, and BLEU-2 / ROUGE-L / Distinct of greedy replies with and without the LoRA (exemplars from the
train bank), against the references. ESConv test is not read here (``affectlens eval dialogue`` scores it).

    python scripts/train_reply_lora.py        # writes weights/reply-lora/ (config.json, lora.safetensors,
                                              # training_report.json): all 9,262 replies, 73 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.conversation import REPLY_TOKENS, reply_prompt, tidy_reply  # noqa: E402
from affectlens.text_metrics import text_scores  # noqa: E402
from fusion.esconv import read_dialogues, reply_samples  # noqa: E402
from fusion.exemplars import ExemplarBank  # noqa: E402
from fusion.lm import apply_lora, load_lora_state_dict, lora_state_dict  # noqa: E402
from fusion.reasoner import lora_off  # noqa: E402

logger = logging.getLogger("train_reply_lora")
DATA = REPO.parent / "shared" / "data" / "esconv"
PROMPT_VERSION = "reply-prompt v1"


def samples(dialogues: list[list[Any]], per_dialogue: int, words: tuple[int, int] | None = None) -> list[dict]:
    """Turn-opening supporter replies (``fusion.esconv.reply_samples``) with a strategy, as dicts; with ``words``
    only replies of that many words (inclusive)."""
    return [
        {"dialogue": s.dialogue, "history": s.history, "seeker": s.seeker, "reference": s.reference,
         "strategy": s.strategy}
        for s in reply_samples(dialogues, per_dialogue)
        if s.strategy and (words is None or words[0] <= len(s.reference.split()) <= words[1])
    ]  # fmt: skip


def tree_facts(texts: list[str], cache: Path) -> dict[str, tuple[str, str | None]]:
    """(feeling, need) our tree finds in each seeker message alone (cached: 50 ms a message)."""
    known: dict[str, list[Any]] = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = sorted({t for t in texts if t not in known})
    if todo:
        from affectlens.analyzer import Analyzer
        from fusion.tree import build_tree

        analyzer = Analyzer()
        t0 = time.time()
        for i, text in enumerate(todo):
            tree = build_tree(analyzer.analyze(None, text=text, tree=False), fuser=analyzer.fuser)
            emotion = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
            need = tree.appraisal.value.get("need") if isinstance(tree.appraisal.value, dict) else None
            known[text] = [str(emotion.get("state") or "unsure"), need]
            if (i + 1) % 500 == 0:
                logger.info("trees: %d / %d (%.0f s)", i + 1, len(todo), time.time() - t0)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known))
    return {t: (known[t][0], known[t][1]) for t in texts}


def prompt_of(sample: dict[str, Any], facts: dict[str, tuple[str, str | None]], exemplar: str | None) -> list[dict]:
    feeling, need = facts[sample["seeker"]]
    return reply_prompt(
        sample["seeker"], [sample["strategy"]], feeling=feeling, need=need, history=sample["history"],
        exemplar=exemplar,
    )  # fmt: skip


def encode(lm: Any, prompt: list[dict[str, str]], reference: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt + reference reply (chat template) and labels (-100 on the prompt)."""
    head = lm.chat_ids(prompt)
    full = lm.chat_ids([*prompt, {"role": "assistant", "content": reference}], add_generation_prompt=False)
    if full[: len(head)] != head:
        raise ValueError("the chat template renders the prompt differently with a reply after it")
    return full, [-100] * len(head) + full[len(head) :]


def batches(rows: list[tuple[list[int], list[int]]], size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar lengths (less padding), in random order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + rng.random())
    out = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(out)
    return out


def collate(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (i, lab) in enumerate(rows):
        ids[b, : len(i)], labels[b, : len(lab)], mask[b, : len(i)] = torch.tensor(i), torch.tensor(lab), 1
    return ids, mask, labels


def loss_of(lm: Any, rows: list[tuple[list[int], list[int]]], size: int) -> float:
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), size):
            ids, mask, labels = collate(rows[start : start + size], lm.eos_token_ids[0])
            out = lm.model(input_ids=ids, attention_mask=mask, labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            total, count = total + float(out.loss) * n, count + n
    return total / max(count, 1)


#: Decoding settings tried on valid (repetition penalty, no-repeat n-gram size): the most BLEU-2 whose replies keep
#: Distinct-2 >= MIN_DISTINCT_2 is kept (lower penalties drift into one generic "I'm sorry to hear that").
DECODE_GRID = ((1.0, 3), (1.1, 3), (1.15, 3), (1.2, 3), (1.3, 4))
MIN_DISTINCT_2 = 0.5


def generate(lm: Any, prompts: list[list[dict[str, str]]], penalty: float = 1.3, no_repeat: int = 4) -> list[str]:
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([lm.chat_ids(prompt)])
            gen = lm.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=REPLY_TOKENS, do_sample=False,
                repetition_penalty=penalty, no_repeat_ngram_size=no_repeat, eos_token_id=list(lm.eos_token_ids),
                pad_token_id=lm.eos_token_ids[0],
            )  # fmt: skip
            out.append(tidy_reply(str(lm.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))))
    return out


def train(
    lm: Any,
    rows: list[tuple[list[int], list[int]]],
    valid_rows: list[tuple[list[int], list[int]]],
    args: argparse.Namespace,
    rng: random.Random,
    t0: float,
    cpu0: float,
) -> dict[str, Any]:
    """One pass (``--epochs``) of AdamW over the LoRA (warm-up, linear decay); valid loss before and after."""
    with lora_off(lm.model):
        base_loss = loss_of(lm, valid_rows, args.batch_size)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    plan = [b for _ in range(args.epochs) for b in batches(rows, args.batch_size, rng)]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / 20) * max(0.05, 1 - step / max(len(plan), 1))
    )
    history = []
    lm.model.train()
    for step, batch in enumerate(plan):
        ids, mask, labels = collate([rows[i] for i in batch], lm.eos_token_ids[0])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = lm.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        if (step + 1) % 10 == 0:
            logger.info(
                "step %d / %d: loss %.3f (%.0f s)", step + 1, len(plan), np.mean(history[-20:]), time.time() - t0
            )
    lm.model.eval()
    return {
        "valid_loss": {"base": round(base_loss, 4), "reply_lora": round(loss_of(lm, valid_rows, args.batch_size), 4)},
        "final_train_loss": round(float(np.mean(history[-20:])), 4),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def choose_decoding(lm: Any, prompts: list[list[dict[str, str]]], references: list[str]) -> dict[str, Any]:
    """``DECODE_GRID`` on the valid prompts (LoRA on): every setting's scores and the one kept."""
    grid = []
    for penalty, no_repeat in DECODE_GRID:
        scores = text_scores(generate(lm, prompts, penalty, no_repeat), references)
        grid.append({"repetition_penalty": penalty, "no_repeat_ngram_size": no_repeat, **scores})
        logger.info("decoding %s", grid[-1])
    varied = [g for g in grid if g["distinct_2"] >= MIN_DISTINCT_2] or grid
    best = max(varied, key=lambda g: g["bleu_2"])
    return {"grid": grid, "chosen": {k: best[k] for k in ("repetition_penalty", "no_repeat_ngram_size")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "weights" / "reply-lora")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "affectlens" / "train" / "reply")
    parser.add_argument(
        "--train-samples", type=int, default=None,
        help="replies to learn from (default: every turn-opening train reply of 5-60 words, 9,262; the first LoRA: 1600)",
    )  # fmt: skip
    parser.add_argument("--valid-dialogues", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--exemplar-rate", type=float, default=0.5, help="share of prompts with an exemplar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decode-only", action="store_true", help="keep --out's LoRA; only choose the decoding settings on valid"
    )
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32 (2x slower on CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0, cpu0 = time.time(), time.process_time()
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)

    from affectlens.registry import create_language_model

    train_all = samples(read_dialogues(DATA / "train.jsonl"), per_dialogue=10_000, words=(5, 60))
    chosen_samples = rng.sample(train_all, min(args.train_samples or len(train_all), len(train_all)))
    valid = samples(read_dialogues(DATA / "valid.jsonl", args.valid_dialogues), per_dialogue=2)
    facts = tree_facts([s["seeker"] for s in chosen_samples + valid], args.cache / "tree-facts.json")
    bank = ExemplarBank.from_esconv(DATA / "train.jsonl")
    vectors = bank.embed([s["seeker"] for s in chosen_samples + valid])

    def exemplar(sample: dict[str, Any], vector: np.ndarray, exclude: bool) -> str | None:
        found = bank.retrieve(
            sample["seeker"], sample["strategy"], exclude_dialogue=sample["dialogue"] if exclude else None,
            vector=vector,
        )  # fmt: skip
        return None if found is None else found.reply

    lm = create_language_model()
    rows = []
    for sample, vector in zip(chosen_samples, vectors[: len(chosen_samples)], strict=True):
        shown = exemplar(sample, vector, exclude=True) if rng.random() < args.exemplar_rate else None
        rows.append(encode(lm, prompt_of(sample, facts, shown), sample["reference"]))
    valid_vectors = vectors[len(chosen_samples) :]
    valid_prompts = {
        "with_exemplar": [
            prompt_of(s, facts, exemplar(s, v, exclude=False)) for s, v in zip(valid, valid_vectors, strict=True)
        ],
        "without_exemplar": [prompt_of(s, facts, None) for s in valid],
    }
    valid_rows = [encode(lm, p, s["reference"]) for p, s in zip(valid_prompts["with_exemplar"], valid, strict=True)]
    logger.info(
        "%d training prompts (mean %.0f tokens), %d valid", len(rows), np.mean([len(r[0]) for r in rows]), len(valid)
    )

    apply_lora(lm.model, r=args.r, alpha=args.alpha, targets=("q_proj", "v_proj"))
    references = [s["reference"] for s in valid]
    if args.decode_only:  # the LoRA in --out as it is: choose the decoding and score again
        from safetensors.torch import load_file

        load_lora_state_dict(lm.model, load_file(args.out / "lora.safetensors"))
        report: dict[str, Any] = json.loads((args.out / "training_report.json").read_text())
        if "valid_loss" in report:  # reports written before the decoding grid kept it at the top
            report["training"]["valid_loss"] = report.pop("valid_loss")
        report["training"]["decode_only_wall_seconds"] = None  # filled below
    else:
        report = {
            "data": {"train_prompts": len(rows), "train_pool": len(train_all), "valid_turns": len(valid)},
            "training": train(lm, rows, valid_rows, args, rng, t0, cpu0),
        }
    lm.model.eval()
    report["decoding"] = choose_decoding(lm, valid_prompts["without_exemplar"], references)
    chosen = report["decoding"]["chosen"]
    penalty, no_repeat = chosen["repetition_penalty"], chosen["no_repeat_ngram_size"]
    scores = {}
    for label, prompts in valid_prompts.items():
        with lora_off(lm.model):
            scores[f"base_{label}"] = text_scores(generate(lm, prompts, penalty, no_repeat), references)
        replies = generate(lm, prompts, penalty, no_repeat)
        scores[f"reply_lora_{label}"] = text_scores(replies, references)
        if label == "without_exemplar":  # logged, not written: the report ships and ESConv text is not ours
            for s, r in zip(valid[:8], replies[:8], strict=True):
                logger.info("example [%s] %r -> %r (reference %r)", s["strategy"], s["seeker"], r, s["reference"])
    report["valid_scores"] = scores
    from safetensors.torch import save_file

    args.out.mkdir(parents=True, exist_ok=True)
    config = {
        "r": args.r, "alpha": args.alpha, "targets": ["q_proj", "v_proj"], "prompt": PROMPT_VERSION,
        "base_model": lm.name, "base_weights": lm.weight_files, "decoding": chosen,
    }  # fmt: skip
    if args.decode_only:
        report["training"]["decode_only_wall_seconds"] = round(time.time() - t0, 1)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in lora_state_dict(lm.model).items()}, args.out / "lora.safetensors")
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

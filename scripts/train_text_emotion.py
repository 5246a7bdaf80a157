"""Train the ``minilm-goemotions`` text-emotion delta on GoEmotions, calibrate it on dev, evaluate it on test.

What it does, in order (every choice is made on the official dev split; test is only read at the end):

1. Baseline: frozen all-MiniLM-L6-v2 sentence embeddings (mean pooled, L2-normalised, cached under --cache)
   + multinomial logistic regression (L2 strength picked on dev), trained on the first gold Ekman label.
2. Fine-tune the top --layers MiniLM layers and two heads jointly: a 7-way canonical head (soft cross-entropy
   over the row's gold Ekman labels, class-weighted by inverse square-root frequency) and a 28-label head
   (binary cross-entropy). The epoch with the best dev Ekman macro-F1 is kept.
3. Save the delta, reload it through the library (``create_text_emotion(model_path=...)``, 128 tokens), and
   choose on dev: per-class logit offsets (macro-F1), the softmax temperature (NLL), the fine-label threshold
   (28-label macro-F1). Save again with the calibration in config.json.
4. Test: Ekman macro-F1 (argmax of the canonical distribution vs the FIRST gold label of each row, as
   ``affectlens eval text-emotion`` scores it), per-class F1, the confusion matrix, and two other readings of
   multi-label rows; 28-label macro-F1 at the chosen threshold; mean valence per GoEmotions sentiment group.

Reproduce (CPU, 1 thread; about 30 CPU-minutes, plus about 10 for the baseline's embeddings on a cold --cache):
    .venv/bin/python scripts/train_text_emotion.py
One thread on purpose: on a shared 2-core machine two threads spin-wait and burned 3-6x the CPU time here.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from affectlens import weights
from affectlens.labels import CANONICAL_EMOTIONS, canonical_label
from affectlens.registry import create_text_emotion
from perception.text.emotion import (
    BASE_GROUP,
    DELTA_GROUP,
    GOEMOTIONS_LABELS,
    TextEmotionConfig,
    TextEmotionDelta,
    TextEmotionNetwork,
    base_config_dict,
    load_base,
    mean_pool,
    pad_ids,
)

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "dev", "test")
K = len(CANONICAL_EMOTIONS)


# -- data ------------------------------------------------------------------------------------------------


def read_split(root: Path, taxonomy: str, split: str) -> tuple[list[str], list[list[int]], list[str]]:
    """GoEmotions TSV (no header): text, comma-separated label ids, comment id."""
    texts, labels, ids = [], [], []
    with (root / taxonomy / f"{split}.tsv").open(encoding="utf-8") as fh:
        for line in fh:
            text, raw, cid = line.rstrip("\n").split("\t")
            texts.append(text)
            labels.append([int(x) for x in raw.split(",")])
            ids.append(cid)
    return texts, labels, ids


def load_goemotions(root: Path, limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Per split: texts, fine multi-hot Nx28, canonical soft targets Nx7, first gold canonical index N, all gold sets.

    ``limit`` keeps the first rows of each split (smoke tests of this script only).
    """
    fine_names = (root / "original" / "labels.txt").read_text().split()
    ekman_names = (root / "ekman" / "labels.txt").read_text().split()
    if tuple(fine_names) != GOEMOTIONS_LABELS:
        raise SystemExit(f"{root}/original/labels.txt is not the 28 GoEmotions labels in the expected order")
    ekman_to_canonical = [CANONICAL_EMOTIONS.index(canonical_label(n) or "") for n in ekman_names]
    data: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        texts, fine_ids, ids = read_split(root, "original", split)
        e_texts, ekman_ids, e_ids = read_split(root, "ekman", split)
        texts, fine_ids, ids, e_texts, ekman_ids, e_ids = (
            texts[:limit],
            fine_ids[:limit],
            ids[:limit],
            e_texts[:limit],
            ekman_ids[:limit],
            e_ids[:limit],
        )
        if texts != e_texts or ids != e_ids:
            raise SystemExit(f"{split}: the original and ekman files are not row-aligned")
        fine = np.zeros((len(texts), len(fine_names)), np.float32)
        soft = np.zeros((len(texts), K), np.float32)
        gold_sets = []
        for i, (f_ids, e_list) in enumerate(zip(fine_ids, ekman_ids, strict=True)):
            fine[i, f_ids] = 1.0
            canon = [ekman_to_canonical[e] for e in e_list]
            soft[i, canon] = 1.0 / len(set(canon))
            gold_sets.append(canon)
        first = np.array([g[0] for g in gold_sets])
        data[split] = {"texts": texts, "fine": fine, "soft": soft, "first": first, "gold": gold_sets}
    return data


# -- metrics ---------------------------------------------------------------------------------------------


def confusion(truth: np.ndarray, pred: np.ndarray, k: int = K) -> np.ndarray:
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def per_class_f1(truth: np.ndarray, pred: np.ndarray, k: int = K) -> np.ndarray:
    m = confusion(truth, pred, k)
    tp = np.diag(m).astype(np.float64)
    denom = m.sum(0) + m.sum(1)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(per_class_f1(truth, pred).mean())


def multilabel_macro_f1(truth: np.ndarray, probs: np.ndarray, threshold: float) -> tuple[float, np.ndarray]:
    pred = probs >= threshold
    gold = truth > 0.5
    tp = (pred & gold).sum(0).astype(np.float64)
    denom = pred.sum(0) + gold.sum(0)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1.mean()), f1


def ekman_report(split: dict[str, Any], probs: np.ndarray) -> dict[str, Any]:
    """Single-label scores of argmax(probs): vs the first gold label (primary), on single-label rows only,
    and 'any gold' (a prediction inside the row's gold set counts as that label, else the first gold)."""
    pred = probs.argmax(1)
    first = split["first"]
    single = np.array([len(set(g)) == 1 for g in split["gold"]])
    any_truth = np.array([p if p in g else g[0] for p, g in zip(pred, split["gold"], strict=True)])
    f1 = per_class_f1(first, pred)
    return {
        "macro_f1": float(f1.mean()),
        "accuracy": float((pred == first).mean()),
        "per_class_f1": {e: round(float(v), 4) for e, v in zip(CANONICAL_EMOTIONS, f1, strict=True)},
        "confusion_matrix": {
            "rows_true_cols_pred": list(CANONICAL_EMOTIONS),
            "counts": confusion(first, pred).tolist(),
        },
        "macro_f1_single_label_rows": macro_f1(first[single], pred[single]),
        "single_label_rows": int(single.sum()),
        "macro_f1_any_gold": macro_f1(any_truth, pred),
        "rows": len(pred),
    }


# -- baseline: frozen embeddings + logistic regression ----------------------------------------------------


@torch.inference_mode()
def sentence_embeddings(texts: list[str], base_dir: Path, batch_size: int = 64) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised, 128 tokens): Nx384."""
    encoder, tokenizer = load_base(base_dir)
    out = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out[idx] = F.normalize(mean_pool(hidden, enc["attention_mask"]), dim=1).numpy()
    return out


def fit_logreg(x: np.ndarray, y: np.ndarray, l2: float, class_weight: np.ndarray | None) -> tuple[torch.Tensor, ...]:
    """Multinomial logistic regression, full-batch L-BFGS; returns (W, b)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w = torch.zeros(x.shape[1], K, requires_grad=True)
    b = torch.zeros(K, requires_grad=True)
    cw = None if class_weight is None else torch.from_numpy(class_weight).float()
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt, weight=cw) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def run_baseline(data: dict[str, dict[str, Any]], base_dir: Path, cache: Path, key: str) -> dict[str, Any]:
    """``key`` names the base weights and the data rows, so a stale cache is never reused."""
    feats = {}
    for split in SPLITS:
        path = cache / f"minilm_embeddings_{key}_{split}_{len(data[split]['texts'])}.npy"
        if not path.is_file():
            t = time.time()
            np.save(path, sentence_embeddings(data[split]["texts"], base_dir))
            print(f"  embedded {split} in {time.time() - t:.0f}s -> {path}")
        feats[split] = np.load(path)
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    x = {s: ((feats[s] - mu) / sd).astype(np.float32) for s in SPLITS}
    y = data["train"]["first"]
    counts = np.bincount(y, minlength=K).astype(np.float64)
    out: dict[str, Any] = {
        "features": "all-MiniLM-L6-v2 mean-pooled, L2-normalised, standardised",
        "target": "first gold label",
    }
    for variant, cw in (("plain", None), ("balanced", (counts.sum() / (K * counts)).astype(np.float32))):
        best: tuple[float, float, tuple[torch.Tensor, ...]] | None = None
        for l2 in (1e-5, 1e-4, 1e-3, 1e-2):
            params = fit_logreg(x["train"], y, l2, cw)
            dev_f1 = macro_f1(
                data["dev"]["first"], (torch.from_numpy(x["dev"]) @ params[0] + params[1]).argmax(1).numpy()
            )
            if best is None or dev_f1 > best[0]:
                best = (dev_f1, l2, params)
        assert best is not None
        w, b = best[2]
        test_probs = torch.softmax(torch.from_numpy(x["test"]) @ w + b, 1).numpy()
        out[variant] = {"l2": best[1], "dev_macro_f1": best[0], "test": ekman_report(data["test"], test_probs)}
        print(f"  baseline {variant}: dev macro-F1 {best[0]:.4f}, test {out[variant]['test']['macro_f1']:.4f}")
    return out


# -- fine-tuning ------------------------------------------------------------------------------------------


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled, length-bucketed batches: shuffle, sort within chunks of 50 batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    out: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [out[i] for i in rng.permutation(len(out))]


def collate(ids: list[list[int]], idx: np.ndarray, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_ids([ids[i] for i in idx], pad)


@torch.inference_mode()
def network_logits(net: TextEmotionNetwork, ids: list[list[int]], pad: int, batch_size: int = 128) -> np.ndarray:
    net.eval()
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), K), np.float32)
    for start in range(0, len(ids), batch_size):
        idx = order[start : start + batch_size]
        c, _ = net(*collate(ids, idx, pad))
        out[idx] = c.numpy()
    return out


def finetune(
    data: dict[str, dict[str, Any]], base_dir: Path, args: argparse.Namespace
) -> tuple[TextEmotionDelta, dict[str, Any]]:
    encoder, tokenizer = load_base(base_dir)
    pad = int(tokenizer.pad_token_id or 0)
    ids = {
        s: tokenizer(data[s]["texts"], truncation=True, max_length=args.max_len)["input_ids"] for s in ("train", "dev")
    }
    config = TextEmotionConfig(base=BASE_GROUP, base_config=base_config_dict(encoder), num_trained_layers=args.layers)
    delta = TextEmotionDelta.from_base(config, encoder)
    train = data["train"]
    prior = train["soft"].mean(0)
    fine_prior = train["fine"].mean(0).clip(1e-4, 1 - 1e-4)
    with torch.no_grad():  # heads start at the label priors, so the first steps do not shake the encoder
        delta.canonical_head.bias.copy_(torch.from_numpy(np.log(prior)))
        delta.fine_head.bias.copy_(torch.from_numpy(np.log(fine_prior / (1 - fine_prior))))
    net = TextEmotionNetwork(encoder, delta)
    class_w = torch.from_numpy(
        (prior**-args.class_weight_power) / (prior ** (1 - args.class_weight_power)).sum()
    ).float()
    print(f"  class weights {dict(zip(CANONICAL_EMOTIONS, np.round(class_w.numpy(), 2), strict=True))}")

    head_params = [*delta.canonical_head.parameters(), *delta.fine_head.parameters()]
    opt = torch.optim.AdamW(
        [{"params": delta.layers.parameters(), "lr": args.lr}, {"params": head_params, "lr": args.head_lr}],
        weight_decay=0.01,
    )
    lengths = np.array([len(x) for x in ids["train"]])
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = math.ceil(len(lengths) / args.batch_size)
    total, warmup = steps_per_epoch * args.epochs, int(0.06 * steps_per_epoch * args.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(warmup, 1), max(0.0, (total - s) / max(total - warmup, 1)))
    )
    soft = torch.from_numpy(train["soft"])
    fine = torch.from_numpy(train["fine"])
    history, best_f1, best_state = [], -1.0, copy.deepcopy(delta.state_dict())
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        net.train()
        running = 0.0
        for step, idx in enumerate(batches(lengths, args.batch_size, rng), 1):
            c_logits, f_logits = net(*collate(ids["train"], idx, pad))
            ce = -(soft[idx] * F.log_softmax(c_logits, 1) * class_w).sum(1).mean()
            bce = F.binary_cross_entropy_with_logits(f_logits, fine[idx], reduction="none").sum(1).mean()
            loss = ce + args.fine_weight * bce
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(delta.parameters(), 1.0)
            opt.step()
            sched.step()
            running += loss.item()
            if step % 200 == 0:
                print(
                    f"  epoch {epoch} step {step}/{steps_per_epoch} loss {running / 200:.4f} ({time.time() - t0:.0f}s)"
                )
                running = 0.0
        dev_f1 = macro_f1(data["dev"]["first"], network_logits(net, ids["dev"], pad).argmax(1))
        history.append({"epoch": epoch, "dev_ekman_macro_f1_argmax": dev_f1, "elapsed_s": round(time.time() - t0, 1)})
        print(f"  epoch {epoch}: dev Ekman macro-F1 {dev_f1:.4f} ({time.time() - t0:.0f}s)")
        if dev_f1 > best_f1:
            best_f1, best_state = dev_f1, copy.deepcopy(delta.state_dict())
    delta.load_state_dict(best_state)
    best_epoch = max(history, key=lambda h: h["dev_ekman_macro_f1_argmax"])["epoch"]
    return delta.eval(), {"history": history, "best_epoch": best_epoch, "train_wall_s": round(time.time() - t0, 1)}


# -- calibration on dev -----------------------------------------------------------------------------------


def tune_bias(logits: np.ndarray, split: dict[str, Any]) -> np.ndarray:
    """Per-class logit offsets (neutral fixed at 0) by coordinate ascent on dev macro-F1."""
    bias = np.zeros(K, np.float32)
    grid = np.round(np.arange(-2.0, 2.01, 0.1), 2)
    best = macro_f1(split["first"], (logits + bias).argmax(1))
    for _ in range(3):
        for c in range(1, K):
            for v in grid:
                trial = bias.copy()
                trial[c] = v
                f1 = macro_f1(split["first"], (logits + trial).argmax(1))
                if f1 > best + 1e-9 or (abs(f1 - best) <= 1e-9 and abs(v) < abs(bias[c])):
                    best, bias = f1, trial
    return bias


def tune_temperature(logits: np.ndarray, soft: np.ndarray) -> float:
    best_t, best_nll = 1.0, math.inf
    for t in np.exp(np.linspace(math.log(0.3), math.log(5.0), 121)):
        z = torch.from_numpy(logits / t)
        nll = float(-(torch.from_numpy(soft) * F.log_softmax(z, 1)).sum(1).mean())
        if nll < best_nll:
            best_t, best_nll = float(t), nll
    return best_t


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "goemotions")
    parser.add_argument("--out", type=Path, default=REPO / "weights" / DELTA_GROUP)
    parser.add_argument("--report", type=Path, default=None, help="JSON report (default: <out>/training_report.json)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/affectlens-text-emotion"))
    parser.add_argument("--layers", type=int, default=3, help="top MiniLM layers fine-tuned (and shipped)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64, help="tokens per training text")
    parser.add_argument("--lr", type=float, default=8e-5, help="learning rate of the fine-tuned layers")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument(
        "--fine-weight", type=float, default=0.5, help="weight of the 28-label BCE (summed over labels)"
    )
    parser.add_argument("--class-weight-power", type=float, default=0.5, help="class weight = prior^-power")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored weight dtype")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="1 wastes least CPU on a shared machine")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="first rows of each split only (smoke test)")
    args = parser.parse_args()

    cpu0, wall0 = time.process_time(), time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    args.cache.mkdir(parents=True, exist_ok=True)
    base = weights.locate_group(BASE_GROUP)
    base_dir = base.path
    data = load_goemotions(args.data, args.limit)
    print({s: len(data[s]["texts"]) for s in SPLITS})

    report: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if not args.skip_baseline:
        print("baseline: MiniLM embeddings + logistic regression")
        report["baseline"] = run_baseline(data, base_dir, args.cache, base.files["minilm-l6-model"][:12])

    print(f"fine-tuning the top {args.layers} layers + heads")
    cpu_train0 = time.process_time()
    delta, train_info = finetune(data, base_dir, args)
    train_info["train_cpu_s"] = round(time.process_time() - cpu_train0, 1)
    report["training"] = train_info
    dtype = torch.float16 if args.dtype == "float16" else None
    delta.save_pretrained(args.out, dtype=dtype)

    print("calibrating on dev through the library (128 tokens)")
    model = create_text_emotion("minilm-goemotions", model_path=str(args.out), batch_size=64)
    logits = {s: model.predict_logits(data[s]["texts"]) for s in ("dev", "test")}
    bias = tune_bias(logits["dev"][0], data["dev"])
    temperature = tune_temperature(logits["dev"][0] + bias, data["dev"]["soft"])
    fine_dev = 1 / (1 + np.exp(-logits["dev"][1]))
    thresholds = np.round(np.arange(0.05, 0.96, 0.01), 2)
    threshold = float(max(thresholds, key=lambda t: multilabel_macro_f1(data["dev"]["fine"], fine_dev, t)[0]))
    model.update_config(
        temperature=round(temperature, 4), class_bias=tuple(round(float(b), 2) for b in bias), fine_threshold=threshold
    )

    results: dict[str, Any] = {}
    for split in ("dev", "test"):
        raw_probs = torch.softmax(torch.from_numpy(logits[split][0]), 1).numpy()
        probs, fine_probs = model.calibrate(*logits[split])
        fine_f1, fine_per = multilabel_macro_f1(data[split]["fine"], fine_probs, threshold)
        results[split] = {
            "ekman": ekman_report(data[split], probs),
            "ekman_without_class_bias": ekman_report(data[split], raw_probs)["macro_f1"],
            "fine_macro_f1": fine_f1,
            "fine_per_label_f1": {n: round(float(v), 4) for n, v in zip(GOEMOTIONS_LABELS, fine_per, strict=True)},
        }
        print(
            f"  {split}: Ekman macro-F1 {results[split]['ekman']['macro_f1']:.4f} "
            f"(without class offsets {results[split]['ekman_without_class_bias']:.4f}), 28-label macro-F1 {fine_f1:.4f}"
        )
    # Valence check: mean predicted valence per GoEmotions sentiment group (single-label test rows).
    g_texts, g_labels, _ = read_split(args.data, "group", "test")
    g_texts, g_labels = g_texts[: args.limit], g_labels[: args.limit]
    g_names = (args.data / "group" / "labels.txt").read_text().split()
    va = model.valence_arousal(model.calibrate(*logits["test"])[1])
    assert g_texts == data["test"]["texts"]
    results["test"]["mean_valence_by_sentiment_group"] = {
        name: round(float(va[[i for i, g in enumerate(g_labels) if g == [j]], 0].mean()), 3)
        for j, name in enumerate(g_names)
    }
    results["test"]["mean_arousal_by_sentiment_group"] = {
        name: round(float(va[[i for i, g in enumerate(g_labels) if g == [j]], 1].mean()), 3)
        for j, name in enumerate(g_names)
    }
    report["calibration"] = {
        "class_bias": model.config.class_bias,
        "temperature": model.config.temperature,
        "fine_threshold": threshold,
    }
    report["results"] = results
    test_f1 = results["test"]["ekman"]["macro_f1"]
    model.update_config(
        training={
            "data": "GoEmotions official train split (43,410 Reddit comments); calibrated on dev; CC BY 4.0",
            "script": "scripts/train_text_emotion.py",
            "seed": args.seed,
            "best_epoch": train_info["best_epoch"],
            "test_ekman_macro_f1": round(test_f1, 4),
            "test_fine_macro_f1": round(results["test"]["fine_macro_f1"], 4),
        }
    )
    model.network.delta.save_pretrained(args.out, dtype=dtype)
    files = {
        name: {"bytes": (args.out / name).stat().st_size, "sha256": sha256(args.out / name)}
        for name in ("config.json", "model.safetensors")
    }
    report["files"] = files
    report["cpu_s_total"] = round(time.process_time() - cpu0, 1)
    report["wall_s_total"] = round(time.time() - wall0, 1)
    report_path = args.report or args.out / "training_report.json"
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                "test_ekman_macro_f1": test_f1,
                "baseline": {
                    k: v["test"]["macro_f1"] for k, v in report.get("baseline", {}).items() if isinstance(v, dict)
                },
                "files": files,
                "cpu_s_total": report["cpu_s_total"],
                "wall_s_total": report["wall_s_total"],
            },
            indent=2,
        )
    )
    print(f"report -> {report_path}")


if __name__ == "__main__":
    main()

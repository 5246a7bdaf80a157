"""Train the support-strategy planner on ESConv and compare it with the majority class and the LM choosing alone.

Data: ``../shared/data/esconv/{train,valid,test}.jsonl`` (standard split). Examples at two levels
(``fusion.esconv``): every supporter message with a strategy after the seeker has spoken (the dialogue before it ->
its strategy), and every supporter turn (the dialogue before its first message -> the set of its strategies).
Features: ``fusion.strategy.context_features`` with the blocks of ``--hash-buckets``, ``--sentence`` and
``--history``; the two embedders' outputs are cached per text under ``--cache``.

1. ``StrategyHead`` (MLP) on train, AdamW, soft targets (``--targets``: ``mixed`` = each message's strategy, and for
   a turn's first message the turn's strategies shared equally; ``message``; ``turn`` = turn examples only); the
   epoch with the best valid turn-level top-1 kept; ``--members`` seeds averaged.
   ``--encoder``: also the strategy encoder (``fusion.strategy_encoder``: all-MiniLM-L6-v2's top ``--encoder-layers``
   layers fine-tuned on the dialogue's words, ``--encoder-epochs``, the best valid epoch kept, float16), mixed into
   the MLP's distribution at the weight (0 to 1) with the best valid turn-level top-1; ``--encoder-members K``
   trains K encoders (seeds seed..seed+K-1, ``--encoder-epochs`` one value or one per member) and averages them.
   ``--lm-reader``: also the strategy LM reader (``fusion.strategy_lm``: SmolLM2-135M's top ``--lm-reader-layers``
   layers, norm and a linear head fine-tuned on the dialogue as a transcript, over the frozen lower layers' states,
   which are computed once and cached under ``--cache``; ``--lm-reader-epochs``, the best valid epoch kept,
   float16); ``--lm-reader-members K`` averages K readers (member k trained with seed seed+k; ``--lm-reader-from``
   supplies the first members already trained, so a run can add a member to a shipped reader). The encoder's and the reader's weights in the mix (the MLP keeps the rest) are the pair with the best
   valid turn-level top-1.
2. ``repetition_penalty`` and ``fresh_secondary``: the best valid turn-level top-1 whose cross-turn repetition (the
   first message of a supporter turn re-using a strategy of the previous supporter turn) stays at most 0.30 less two
   standard errors of a 0.30 rate over the valid turns (0.280), so that it holds on unseen dialogues too. (The
   shipped planner's rule is a margin instead, ``repetition_margin``, fitted afterwards without labels by
   ``scripts/fit_repetition_rule.py``; ``--refit`` keeps the folder's penalty and margin.)
3. Test, scored once: per message (top-1 accuracy, macro-F1) and per turn (``turn_top1_accuracy``: the top strategy
   is one of the turn's), repetition (planner and the human references), against the majority class (from train)
   and SmolLM2 choosing alone (next-token scores over the strategy names, zero-shot, on ``--lm-limit`` test messages).

    python scripts/train_strategy_planner.py --history --dropout 0.5 --lr 3e-4 --members 3 --affect --encoder
    # the shipped planner: weights/strategy-planner/ and its training_report.json (45 min on 2 cores, the encoder
    # most of it; ``--encoder-from DIR [DIR ...]`` mixes in the encoders saved there instead: 6 min)
    ... --encoder --encoder-members 2 --encoder-epochs 3 5   # two encoders averaged (tried, not shipped)
    ... --valid-only --combiner-cv   # also cross-validate the mix on valid: the weight grid and a learned combiner
    ... --lm-reader --lm-reader-limit N --valid-only   # a reader trained on the first N train contexts; their LM
    # states come from the whole split's cache when there is one, else only theirs are computed (and cached)
    ... --encoder --lm-reader --refit weights/strategy-planner --out DIR   # every model again on train + valid with
    # the choices that planner made on valid (each model's kept epoch, the mix, the repetition rule); test once
    # (then ``scripts/fit_repetition_rule.py --planner DIR`` fits the rule for the refitted models, label-free)
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from affectlens.labels import ESCONV_STRATEGIES  # noqa: E402
from fusion.esconv import (  # noqa: E402
    StrategyExample,
    majority_strategy,
    read_dialogues,
    repetition_rate,
    score_strategies,
    score_turns,
    strategy_examples,
    turn_examples,
)
from fusion.strategy import (  # noqa: E402
    FeatureSpec,
    Message,
    StrategyConfig,
    StrategyHead,
    context_features,
    decide,
    previous_supporter_turn,
    text_embedder,
)
from fusion.strategy_encoder import (  # noqa: E402
    StrategyEncoder,
    StrategyEncoderConfig,
    StrategyEncoderDelta,
    StrategyEncoderEnsemble,
    load_strategy_encoder,
    member_files,
    pad,
    saved_members,
)
from fusion.strategy_lm import (  # noqa: E402
    StrategyLMConfig,
    StrategyLMDelta,
    StrategyLMReader,
    StrategyLMReaderEnsemble,
    lm_shape,
    stack_states,
)
from fusion.strategy_lm import member_files as lm_reader_files  # noqa: E402
from fusion.strategy_lm import saved_members as saved_lm_readers  # noqa: E402

logger = logging.getLogger("train_strategy_planner")
DATA = REPO.parent / "shared" / "data" / "esconv"
FEATURE_VERSION = "strategy-features v2"
#: bump when ``fusion.strategy_lm`` changes the text or the states it caches
LM_STATES_VERSION = "strategy-lm-states v1"
#: the issue's bound on cross-turn strategy repetition
MAX_REPETITION = 0.30
#: the repetition penalties tried on valid (each with and without ``fresh_secondary``)
PENALTIES = (1.0, 1.1, 1.2, 1.25, 1.3, 1.4, 1.5, 1.6, 1.75, 2.0, 2.5, 3.0, 5.0)


@dataclass(frozen=True)
class Refit:
    """The choices a trained planner made on valid, for training the same recipe again on train + valid (where valid
    can no longer choose anything): each model's epochs (schedule, kept), the mix and the repetition rule."""

    folder: Path
    mlp_epochs: tuple[int, ...]
    encoder_epochs: tuple[int, int] | None
    reader_epochs: tuple[int, int] | None
    encoder_weight: float
    lm_reader_weight: float
    repetition_penalty: float
    fresh_secondary: bool
    repetition_margin: float = 0.0

    @classmethod
    def read(cls, folder: Path) -> Refit:
        config = json.loads((folder / "config.json").read_text())

        def epochs(name: str, weight: float) -> tuple[int, int] | None:
            if weight <= 0:
                return None
            training = json.loads((folder / name).read_text()).get("training", {})
            return int(training["epochs"]), int(training["kept_epoch"])

        return cls(
            folder=folder,
            mlp_epochs=tuple(int(k) for k in config["metrics"]["kept_epochs"]),
            encoder_epochs=epochs(member_files(0)[0], config.get("encoder_weight", 0.0)),
            reader_epochs=epochs(lm_reader_files(0)[0], config.get("lm_reader_weight", 0.0)),
            encoder_weight=float(config.get("encoder_weight", 0.0)),
            lm_reader_weight=float(config.get("lm_reader_weight", 0.0)),
            repetition_penalty=float(config["repetition_penalty"]),
            fresh_secondary=bool(config.get("fresh_secondary", False)),
            repetition_margin=float(config.get("repetition_margin", 0.0)),
        )

    def training_note(self, epochs: tuple[int, int]) -> str:
        return (
            f"ESConv train + valid (soft targets as the MLP's); {epochs[0]} epochs scheduled, epoch {epochs[1]} kept, "
            f"as {self.folder} chose on valid"
        )


def cached(embed: Callable[[list[str]], Any], path: Path) -> Callable[[list[str]], Any]:
    """``embed`` with its outputs per text kept in ``path`` (``.npz``: texts and one or two arrays)."""
    store: dict[str, tuple[np.ndarray, ...]] = {}
    if path.is_file():
        z = np.load(path, allow_pickle=True)
        arrays = [z[k] for k in sorted(z.files) if k != "texts"]
        store = {t: tuple(a[i] for a in arrays) for i, t in enumerate(z["texts"].tolist())}

    def run(texts: list[str]) -> Any:
        missing = sorted({t for t in texts if t not in store})
        if missing:
            out = embed(missing)
            out = out if isinstance(out, tuple) else (out,)
            store.update({t: tuple(a[i] for a in out) for i, t in enumerate(missing)})
            texts_all = list(store)
            path.parent.mkdir(parents=True, exist_ok=True)
            named: dict[str, Any] = {f"a{k}": np.stack([store[t][k] for t in texts_all]) for k in range(len(out))}
            np.savez(path, texts=np.array(texts_all, dtype=object), **named)
        rows = [store[t] for t in texts]
        arrays = tuple(np.stack([r[k] for r in rows]) for k in range(len(rows[0]))) if rows else ()
        return arrays if len(arrays) > 1 else arrays[0]

    return run


def repetition_bound(turns: int, rate: float = MAX_REPETITION) -> float:
    """``rate`` less two standard errors of that rate over ``turns`` turns: a measured repetition below it keeps
    the true rate under ``rate`` on unseen dialogues too."""
    return rate - 2 * (rate * (1 - rate) / max(turns, 1)) ** 0.5


def hits(sets: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Per turn: whether its chosen strategy (``top``, an index per turn) is one of the turn's (``sets``)."""
    return sets[np.arange(len(top)), top]


def train_head(
    x: np.ndarray,
    targets: np.ndarray,
    xv: np.ndarray,
    valid_turns: np.ndarray,
    valid_sets: np.ndarray,
    features: dict[str, Any],
    seed: int,
    args: argparse.Namespace,
    fixed_epochs: int | None = None,
) -> StrategyHead:
    """One member: soft-target cross-entropy (label smoothing 0.1), the epoch with the best valid turn top-1 kept
    (``fixed_epochs``: that many epochs and the last kept, valid unused)."""
    torch.manual_seed(seed)
    config = StrategyConfig(input_dim=x.shape[1], hidden=args.hidden, dropout=args.dropout, features=features)
    head = StrategyHead(config)
    head.set_standardisation(x)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    xt = torch.from_numpy(x)
    tt = torch.from_numpy(targets) * 0.9 + 0.1 / targets.shape[1]
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(fixed_epochs or args.epochs):
        head.train()
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            loss = -(torch.log_softmax(head(xt[idx]), 1) * tt[idx]).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if fixed_epochs:
            best = (-1.0, epoch + 1, head.state_dict())
            continue
        top = head.probabilities(xv[valid_turns]).argmax(1)
        acc = float(hits(valid_sets, top).mean())
        logger.info("seed %d epoch %d: valid turn top-1 %.4f", seed, epoch + 1, acc)
        if acc > best[0]:
            best = (acc, epoch + 1, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    head.config.metrics["kept_epoch"] = best[1]
    return head.eval()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warmup_decay(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 6% of ``steps``, then linear decay to zero (both fine-tuned readers)."""
    warm = max(1, int(0.06 * steps))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * max(0.0, (steps - k) / max(1, steps - warm))
    )


def soft_target_step(
    opt: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    params: Iterable[torch.nn.Parameter],
    logits: torch.Tensor,
    soft: torch.Tensor,
) -> float:
    """One step on soft-target cross-entropy, gradients clipped to norm 1 over ``params``; returns the batch loss."""
    loss = -(soft * torch.log_softmax(logits, 1)).sum(1).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    schedule.step()
    return float(loss.detach())


Best = tuple[float, dict[str, torch.Tensor]]


def end_epoch(
    name: str,
    seed: int,
    epoch: int,
    top: np.ndarray | None,
    valid_sets: np.ndarray,
    loss: float,
    start: float,
    history: list[dict[str, float]],
    best: Best,
    model: torch.nn.Module,
) -> Best:
    """Score an epoch (``top``: each valid turn's top strategy), log it into ``history``, and return ``best`` or,
    when this epoch's valid turn top-1 beats it, this epoch's score and a copy of ``model``'s state (``top`` None:
    valid is not scored and this epoch is kept)."""
    acc = -1.0 if top is None else float(hits(valid_sets, top).mean())
    history.append({"epoch": epoch, "loss": round(loss, 4), "seconds": round(time.time() - start, 1)})
    if top is not None:
        history[-1]["valid_turn_top1"] = round(acc, 4)
    logger.info("%s (seed %d) epoch %d: %s", name, seed, epoch, history[-1])
    if top is None or acc > best[0]:
        return acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best


def training_record(
    epochs: int,
    seed: int,
    lr: float,
    history: list[dict[str, float]],
    refit: Refit | None,
    fixed: tuple[int, int] | None,
) -> dict[str, Any]:
    """A fine-tuned reader's provenance: its data, schedule and kept epoch (``fixed``: the refit's, else the best
    valid epoch of ``history``)."""
    trained_on = "ESConv train (soft targets as the MLP's); the epoch with the best ESConv valid turn top-1 kept"
    return {
        "data": refit.training_note(fixed) if refit and fixed else trained_on,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "kept_epoch": fixed[1] if fixed else max(history, key=lambda h: h["valid_turn_top1"])["epoch"],
        "history": history,
    }


def train_encoder(
    train_dialogues: list[tuple[Message, ...]],
    targets: np.ndarray,
    valid_dialogues: list[tuple[Message, ...]],
    valid_turns: np.ndarray,
    valid_sets: np.ndarray,
    seed: int,
    epochs: int,
    args: argparse.Namespace,
    refit: Refit | None = None,
) -> tuple[StrategyEncoder, list[dict[str, float]]]:
    """The strategy encoder (``fusion.strategy_encoder``): the top ``--encoder-layers`` of all-MiniLM-L6-v2 and a
    linear head, soft-target cross-entropy, AdamW (the head at 20x the learning rate), linear warm-up and decay,
    bfloat16 autocast; the epoch with the best valid turn top-1 kept (``refit``: its schedule and kept epoch, valid
    unused). Returns it and the per-epoch history."""
    fixed = refit.encoder_epochs if refit else None
    epochs, stop = fixed or (epochs, epochs)  # the schedule's length, and the epoch training stops after
    from affectlens import weights
    from perception.text.emotion import BASE_GROUP, base_config_dict, load_base

    torch.manual_seed(seed)
    base, tokenizer = load_base(weights.locate_group(BASE_GROUP).path)
    config = StrategyEncoderConfig(
        base_config=base_config_dict(base), num_trained_layers=args.encoder_layers, max_length=args.encoder_max_length
    )
    model = StrategyEncoder(base, tokenizer, StrategyEncoderDelta.from_base(config, base))
    ids, valid_ids = model.tokenize(train_dialogues), model.tokenize(valid_dialogues)
    logger.info(
        "encoder: %d train contexts, %.0f tokens on average, %.0f%% cut at %d",
        len(ids), np.mean([len(i) for i in ids]), 100 * np.mean([len(i) == config.max_length for i in ids]),
        config.max_length,
    )  # fmt: skip
    trained = [p for layer in model.delta.layers for p in layer.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": trained, "lr": args.encoder_lr},
            {"params": model.delta.head.parameters(), "lr": 20 * args.encoder_lr},
        ],
        weight_decay=0.01,
    )
    batch_size = 32
    schedule = warmup_decay(opt, epochs * -(-len(ids) // batch_size))
    soft = torch.from_numpy(targets)
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best: Best = (-1.0, {})
    for epoch in range(1, stop + 1):
        model.train()
        start, total = time.time(), 0.0
        order = rng.permutation(len(ids))
        for k in range(0, len(order), batch_size):
            rows = order[k : k + batch_size]
            x, mask = pad([ids[i] for i in rows])
            params = [*trained, *model.delta.head.parameters()]
            total += soft_target_step(opt, schedule, params, model(x, mask), soft[rows]) * len(rows)
        top = None if fixed else model.probabilities_of_ids([valid_ids[i] for i in valid_turns]).argmax(1)
        best = end_epoch("encoder", seed, epoch, top, valid_sets, total / len(ids), start, history, best, model.delta)
    model.delta.load_state_dict(best[1])
    model.delta.config = replace(
        config,
        training=training_record(epochs, seed, args.encoder_lr, history, refit, fixed),
    )
    return model.eval(), history


def write_members(
    out: Path,
    deltas: list[Any],
    origins: list[dict[str, Any] | None],
    files: Callable[[int], tuple[str, str]],
    saved: Callable[[Path], int],
) -> None:
    """Write an ensemble's members into ``out`` as members 0, 1, ...: one trained here by its ``save_pretrained``
    (float16), one loaded from a folder as its files byte for byte; no stale member of an earlier run stays."""
    for k, (delta, origin) in enumerate(zip(deltas, origins, strict=False)):
        if origin is None:
            delta.save_pretrained(out, dtype=torch.float16, member=k)
            continue
        for name, target in zip(files(origin["member"]), files(k), strict=True):
            source = Path(origin["folder"]) / name
            if source.resolve() != (out / target).resolve():
                shutil.copyfile(source, out / target)
    for k in range(len(deltas), max(len(deltas), saved(out)) + 1):
        for name in files(k):
            (out / name).unlink(missing_ok=True)
    logger.info("members written: %s", [files(k) for k in range(len(deltas))])


def cached_lower_states(reader: StrategyLMReader, dialogues: list[tuple[Message, ...]], path: Path) -> list[np.ndarray]:
    """``reader.lower_states`` of every dialogue, kept in ``path`` (``.npz``: the states end to end and their
    lengths); the LM pass is most of the reader's cost, and its states never change while the LM does not."""
    if path.is_file():
        z = np.load(path)
        lengths, flat = z["lengths"], z["flat"]
        if len(lengths) == len(dialogues):
            ends = np.cumsum(lengths)
            logger.info("LM states from %s", path)
            return [flat[e - n : e] for n, e in zip(lengths, ends, strict=True)]
    start = time.time()
    states = reader.lower_states(reader.tokenize(dialogues))
    logger.info("LM states of %d contexts: %.0f s", len(states), time.time() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, flat=np.concatenate(states), lengths=np.array([len(x) for x in states]))
    return states


def train_lm_reader(
    reader: StrategyLMReader,
    states: list[np.ndarray],
    targets: np.ndarray,
    valid_states: list[np.ndarray],
    valid_turns: np.ndarray,
    valid_sets: np.ndarray,
    seed: int,
    args: argparse.Namespace,
    refit: Refit | None = None,
) -> list[dict[str, float]]:
    """The strategy LM reader's delta (``fusion.strategy_lm``) on the cached lower states: soft-target cross-entropy,
    AdamW (the head at 20x the learning rate), linear warm-up and decay, batches of similar length, bfloat16
    autocast; the epoch with the best valid turn top-1 kept (``refit``: its schedule and kept epoch, valid unused).
    Returns the per-epoch history."""
    fixed = refit.reader_epochs if refit else None
    torch.manual_seed(seed)
    delta = reader.delta
    body = [*delta.layers.parameters(), *delta.norm.parameters()]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": args.lm_reader_lr}, {"params": delta.head.parameters(), "lr": 20 * args.lm_reader_lr}],
        weight_decay=0.01,
    )
    batch_size = 32
    epochs, stop = fixed or (args.lm_reader_epochs, args.lm_reader_epochs)
    schedule = warmup_decay(opt, epochs * -(-len(states) // batch_size))
    soft = torch.from_numpy(targets)
    lengths = np.array([len(x) for x in states])
    rng = np.random.default_rng(seed)
    history: list[dict[str, float]] = []
    best: Best = (-1.0, {})
    for epoch in range(1, stop + 1):
        reader.train()
        start, total = time.time(), 0.0
        order = rng.permutation(len(states))
        batches = []
        for k in range(0, len(order), 20 * batch_size):  # similar lengths together, within chunks of 20 batches
            chunk = order[k : k + 20 * batch_size]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
        for b in rng.permutation(len(batches)):
            rows = batches[b]
            h, mask = stack_states([states[i] for i in rows])
            total += soft_target_step(opt, schedule, delta.parameters(), reader(h, mask), soft[rows]) * len(rows)
        top = None if fixed else reader.probabilities_of_states([valid_states[i] for i in valid_turns]).argmax(1)
        best = end_epoch("LM reader", seed, epoch, top, valid_sets, total / len(states), start, history, best, delta)
    delta.load_state_dict(best[1])
    delta.config = replace(
        delta.config,
        training=training_record(epochs, seed, args.lm_reader_lr, history, refit, fixed),
    )
    reader.eval()
    return history


def softmax_regression(x: np.ndarray, targets: np.ndarray, l2: float) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression on standardised ``x`` against soft ``targets`` (L-BFGS, L2 strength ``l2``
    on the weights); returns the fitted model's logits as a function of new rows."""
    xt, target = torch.from_numpy(x).double(), torch.from_numpy(targets).double()
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    w = torch.zeros(x.shape[1], targets.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(targets.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -(target * torch.log_softmax(((xt - mu) / sd) @ w + b, 1)).sum(1).mean() + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)

    def logits(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (((torch.from_numpy(rows).double() - mu) / sd) @ w + b).numpy()

    return logits


def combiner_cv(
    model_probs: dict[str, np.ndarray], sets: np.ndarray, groups: np.ndarray, folds: int = 5
) -> dict[str, Any]:
    """How well the mixing would do on dialogues it was not chosen on: ``folds``-fold cross-validation over the
    valid turns, grouped by dialogue, of (a) the weight grid (the best cell on the other folds, weights in steps of
    0.1) and (b) a learned combiner, multinomial logistic regression over every model's log-probabilities (targets:
    the turn's strategies shared equally; L2 strength ``l2`` per feature, standardised inputs), a top-1 per turn
    either way. ``model_probs``: per model, its distribution per valid turn; ``sets``: the turns' strategy sets."""
    names = list(model_probs)
    fold = groups % folds
    everything = np.ones(len(sets), dtype=bool)

    def top1(p: np.ndarray, at: np.ndarray) -> np.ndarray:
        return hits(sets[at], p[at].argmax(1))

    steps = [k / 10 for k in range(11)]
    cells = [np.array([1 - sum(w), *w]) for w in itertools.product(steps, repeat=len(names) - 1) if sum(w) <= 1 + 1e-9]
    stacked = np.stack([model_probs[n] for n in names])  # models x turns x strategies

    def mix(w: np.ndarray) -> np.ndarray:
        return np.tensordot(w, stacked, axes=1)

    grid_hits = np.zeros(len(sets))
    for k in range(folds):
        fit, held = fold != k, fold == k
        best = max(cells, key=lambda w: top1(mix(w), fit).mean())
        grid_hits[held] = top1(mix(best), held)
    x = np.concatenate([np.log(model_probs[n] + 1e-6) for n in names], 1)
    shares = sets / sets.sum(1, keepdims=True)
    learned: dict[str, float] = {}
    for l2 in (0.003, 0.01, 0.03, 0.1, 0.3):
        learned_hits = np.zeros(len(sets))
        for k in range(folds):
            fit, held = fold != k, fold == k
            learned_hits[held] = top1(softmax_regression(x[fit], shares[fit], l2)(x), held)
        learned[str(l2)] = round(float(learned_hits.mean()), 4)
    in_sample = max(top1(mix(w), everything).mean() for w in cells)
    return {
        "models": names,
        "folds": folds,
        "grid_best_in_sample": round(float(in_sample), 4),
        "grid_cross_validated": round(float(grid_hits.mean()), 4),
        "learned_cross_validated_by_l2": learned,
    }


def lm_alone(examples: list[StrategyExample], limit: int) -> tuple[list[list[str]], list[int]]:
    """SmolLM2 picks the strategy zero-shot: next-token scores over the strategy names after a description."""
    from affectlens.registry import create_language_model

    lm = create_language_model()
    names = list(ESCONV_STRATEGIES)
    ids = lm.label_token_ids(names)
    rows = np.random.default_rng(0).permutation(len(examples))[:limit]
    chosen = []
    for i in rows:
        dialogue = examples[i].dialogue[-6:]
        lines = "\n".join(f"{'Seeker' if m.speaker == 'usr' else 'Supporter'}: {m.text}" for m in dialogue)
        prompt = (
            "You are an emotional supporter. The support strategies are: " + "; ".join(names) + ".\n"
            f"Conversation:\n{lines}\nWhich strategy should the supporter use next? Answer with the strategy name only."
        )
        scores = lm.score_next(prompt, ids)
        chosen.append([names[int(torch.as_tensor(scores).argmax())]])
    return chosen, rows.tolist()


def chosen_for(probs: np.ndarray, dialogues: list[tuple[Message, ...]], config: StrategyConfig) -> list[list[str]]:
    return [
        [s for s, _ in decide(p, previous_supporter_turn(d), config)] for p, d in zip(probs, dialogues, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "weights" / "strategy-planner")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "affectlens" / "train" / "strategy")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--hash-buckets", type=int, default=0, help="hashed n-gram columns per message (0: none)")
    parser.add_argument("--sentence", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--history", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--affect", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--targets", choices=["mixed", "message", "turn"], default="mixed")
    parser.add_argument("--members", type=int, default=1, help="ensemble members (seeds seed..seed+members-1)")
    parser.add_argument("--lm-limit", type=int, default=400, help="test messages the LM-alone baseline scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", action="store_true", help="also fine-tune the strategy encoder and mix it in")
    parser.add_argument("--encoder-layers", type=int, default=4, help="top all-MiniLM layers the encoder trains")
    parser.add_argument("--encoder-max-length", type=int, default=160, help="tokens of context the encoder reads")
    parser.add_argument("--encoder-members", type=int, default=1, help="encoders trained (seeds seed, seed+1, ...)")
    parser.add_argument(
        "--encoder-epochs", type=int, nargs="+", default=[3], help="epochs: one value, or one per encoder member"
    )
    parser.add_argument("--encoder-lr", type=float, default=5e-5)
    parser.add_argument(
        "--encoder-limit", type=int, default=None, help="train the encoder on this many contexts (smoke)"
    )
    parser.add_argument(
        "--encoder-from",
        type=Path,
        nargs="+",
        default=None,
        help="with --encoder: mix in the encoders saved in these folders (every member of each), untrained",
    )
    parser.add_argument(
        "--lm-reader", action="store_true", help="also fine-tune the strategy LM reader (SmolLM2) and mix it in"
    )
    parser.add_argument("--lm-reader-layers", type=int, default=4, help="top LM layers the reader trains")
    parser.add_argument("--lm-reader-max-length", type=int, default=192, help="tokens of context the reader reads")
    parser.add_argument("--lm-reader-epochs", type=int, default=3)
    parser.add_argument("--lm-reader-lr", type=float, default=5e-5)
    parser.add_argument(
        "--lm-reader-limit", type=int, default=None, help="train the LM reader on this many contexts (smoke)"
    )
    parser.add_argument(
        "--lm-reader-members", type=int, default=1, help="LM readers averaged (member k trained with seed seed+k)"
    )
    parser.add_argument(
        "--lm-reader-from",
        type=Path,
        nargs="+",
        default=None,
        help="with --lm-reader: the first members are the readers saved in these folders (every member of each), "
        "untrained; the rest up to --lm-reader-members are trained",
    )
    parser.add_argument(
        "--combiner-cv",
        action="store_true",
        help="with --valid-only: cross-validate the mixing on valid (the weight grid and a learned combiner)",
    )
    parser.add_argument(
        "--valid-only", action="store_true", help="an ablation: print the valid figures; no test, nothing written"
    )
    parser.add_argument(
        "--refit",
        type=Path,
        default=None,
        help="train every model again on train + valid with the choices the planner in this folder made on valid "
        "(each model's kept epoch, the mixing weights, the repetition rule); its valid figures are in-sample",
    )
    args = parser.parse_args()
    encoder_epochs = (
        args.encoder_epochs * args.encoder_members if len(args.encoder_epochs) == 1 else args.encoder_epochs
    )
    if args.combiner_cv and not args.valid_only:
        parser.error("--combiner-cv reports with --valid-only")
    refit = Refit.read(args.refit) if args.refit else None
    if refit:
        if args.valid_only or args.encoder_from or args.lm_reader_from:
            parser.error("--refit trains every model on train + valid: not with --valid-only or --*-from")
        if args.members != len(refit.mlp_epochs) or args.encoder_members != 1 or args.lm_reader_members != 1:
            parser.error(f"--refit {args.refit}: --members {len(refit.mlp_epochs)}, one encoder and one reader")
        if args.encoder != (refit.encoder_epochs is not None) or args.lm_reader != (refit.reader_epochs is not None):
            parser.error(f"--refit {args.refit}: --encoder and --lm-reader as that planner mixes them")
    if len(encoder_epochs) != args.encoder_members:
        parser.error(
            f"--encoder-epochs: one value or {args.encoder_members} (one per member), got {args.encoder_epochs}"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0, cpu0 = time.time(), time.process_time()

    from affectlens import weights
    from affectlens.registry import create_text_emotion
    from perception.text.emotion import BASE_GROUP

    def key(group: str) -> str:
        files = sorted(weights.locate_group(group).files.values())
        return hashlib.sha256((FEATURE_VERSION + json.dumps(files)).encode()).hexdigest()[:12]

    embed = cached(
        text_embedder(create_text_emotion()), args.cache / f"text-emotion-{key('text-emotion-minilm-goemotions')}.npz"
    )
    sentence = None
    if args.sentence:
        from fusion.memory import sentence_embedder

        sentence = cached(sentence_embedder(), args.cache / f"sentence-{key(BASE_GROUP)}.npz")
    spec = FeatureSpec(hash_buckets=args.hash_buckets, sentence=args.sentence, history=args.history, affect=args.affect)
    features = {k: v for k, v in asdict(spec).items() if v}
    dialogues = {s: read_dialogues(DATA / f"{s}.jsonl") for s in ("train", "valid", "test")}
    splits = {s: strategy_examples(d) for s, d in dialogues.items()}
    turns = {s: turn_examples(d) for s, d in dialogues.items()}
    # a turn's first message is a message example with the same dialogue before it: its row is the turn's row
    first = {s: np.array([i for i, e in enumerate(ex) if e.first]) for s, ex in splits.items()}
    for s in splits:
        assert [splits[s][i].dialogue for i in first[s]] == [t.dialogue for t in turns[s]], s
    feature_cpu = time.process_time()
    x = {s: context_features([e.dialogue for e in ex], embed, spec, sentence) for s, ex in splits.items()}
    feature_cpu = time.process_time() - feature_cpu
    logger.info("features %s: %s (%.0f CPU-s)", features, {s: v.shape for s, v in x.items()}, feature_cpu)
    n = len(ESCONV_STRATEGIES)
    y = {s: np.array([ESCONV_STRATEGIES.index(e.strategy) for e in ex]) for s, ex in splits.items()}
    sets = {s: np.array([[c in t.strategies for c in ESCONV_STRATEGIES] for t in ts]) for s, ts in turns.items()}
    split_targets = {s: np.eye(n, dtype=np.float32)[y[s]] for s in ("train", "valid")}
    for s, t in split_targets.items():
        if args.targets != "message":
            t[first[s]] = sets[s] / sets[s].sum(1, keepdims=True)
    # the rows trained on, per split: train's, and with --refit valid's too
    fit = {
        s: first[s] if args.targets == "turn" else np.arange(len(y[s])) for s in ("train", "valid")[: 1 + bool(refit)]
    }
    targets = np.concatenate([split_targets[s][r] for s, r in fit.items()])
    fit_dialogues = [splits[s][i].dialogue for s, r in fit.items() for i in r]
    train_cpu = time.process_time()
    members = [
        train_head(
            np.concatenate([x[s][r] for s, r in fit.items()]),
            targets,
            x["valid"],
            first["valid"],
            sets["valid"],
            features,
            args.seed + k,
            args,
            refit.mlp_epochs[k] if refit else None,
        )
        for k in range(args.members)
    ]
    head = StrategyHead.ensemble(members) if len(members) > 1 else members[0]
    head.config.metrics = {"kept_epochs": [m.config.metrics["kept_epoch"] for m in members]}
    train_cpu = time.process_time() - train_cpu

    probs = {s: head.probabilities(x[s]) for s in (("valid",) if args.valid_only else ("valid", "test"))}
    encoders: list[StrategyEncoder] = []
    origins: list[dict[str, Any] | None] = []  # per encoder: the folder it was loaded from (None: trained here)
    encoder_report: dict[str, Any] = {}
    encoder_probs: dict[str, np.ndarray] = {}

    def alone_turns(model_probs: dict[str, np.ndarray]) -> dict[str, float]:
        """Turn top-1 of a model's top strategy alone, per split."""
        alone = {s: [[ESCONV_STRATEGIES[int(q.argmax())]] for q in p] for s, p in model_probs.items()}
        return {s: score_turns([alone[s][i] for i in first[s]], turns[s])["turn_top1_accuracy"] for s in alone}

    def members_report(
        models: list[Any], member_probs: list[dict[str, np.ndarray]], origins: list[dict[str, Any] | None]
    ) -> list[dict[str, Any]]:
        """Per member of an ensemble: where it came from, its training and its turn top-1 alone."""
        return [
            {
                "from": origin,
                "seed": model.config.training.get("seed"),
                "layers": model.config.num_trained_layers,
                "history": model.config.training.get("history", []),
                "alone_turns": alone_turns(m),
            }
            for model, m, origin in zip(models, member_probs, origins, strict=True)
        ]

    if args.encoder:
        encoder_cpu = time.process_time()
        if args.encoder_from:
            for folder in args.encoder_from:
                count = saved_members(folder)
                if count == 0:
                    parser.error(f"--encoder-from {folder}: no saved strategy encoder there")
                loaded = load_strategy_encoder(folder, members=count)
                encoders += loaded.members if isinstance(loaded, StrategyEncoderEnsemble) else [loaded]
                for k in range(count):
                    origin = {"folder": str(folder), "member": k, "sha256": sha256_file(folder / member_files(k)[1])}
                    origins.append(origin)
                    logger.info("encoder from %s (sha256 %s), not trained again", folder, origin["sha256"])
        else:
            for k, epochs in enumerate(encoder_epochs):
                encoder, _ = train_encoder(
                    fit_dialogues[: args.encoder_limit],
                    targets[: args.encoder_limit],
                    [e.dialogue for e in splits["valid"]],
                    first["valid"],
                    sets["valid"],
                    args.seed + k,
                    epochs,
                    args,
                    refit,
                )
                for p in encoder.delta.parameters():  # as it ships (float16): the figures below are the shipped model's
                    p.data = p.data.half().float()
                encoders.append(encoder)
                origins.append(None)
        member_probs = [{s: e.probabilities([ex.dialogue for ex in splits[s]]) for s in probs} for e in encoders]
        encoder_probs = {s: np.mean([m[s] for m in member_probs], axis=0) for s in probs}

        encoder_report = {
            "members": members_report(encoders, member_probs, origins),
            "encoder_alone_turns": alone_turns(encoder_probs),
            "cpu_seconds": round(time.process_time() - encoder_cpu, 1),
        }
    readers: list[StrategyLMReader] = []
    lm_origins: list[dict[str, Any] | None] = []  # per reader: the folder it was loaded from (None: trained here)
    lm_probs: dict[str, np.ndarray] = {}
    lm_report: dict[str, Any] = {}
    if args.lm_reader:
        lm_cpu = time.process_time()
        from affectlens.registry import create_language_model
        from fusion.lm import DEFAULT_LM

        lm = create_language_model(DEFAULT_LM)
        for folder in args.lm_reader_from or []:
            count = saved_lm_readers(folder)
            if count == 0:
                parser.error(f"--lm-reader-from {folder}: no saved strategy LM reader there")
            for k in range(count):
                readers.append(StrategyLMReader(lm, StrategyLMDelta.from_pretrained(folder, k)))
                origin = {"folder": str(folder), "member": k, "sha256": sha256_file(folder / lm_reader_files(k)[1])}
                lm_origins.append(origin)
                logger.info("LM reader from %s (sha256 %s), not trained again", folder, origin["sha256"])
        trained = range(len(readers), max(len(readers), args.lm_reader_members))  # the members still missing
        for _ in trained:
            lm_config = StrategyLMConfig(
                lm=DEFAULT_LM,
                lm_config=lm_shape(lm.model.config),
                num_trained_layers=args.lm_reader_layers,
                max_length=args.lm_reader_max_length,
            )
            readers.append(StrategyLMReader(lm, StrategyLMDelta.from_lm(lm_config, lm)))
            lm_origins.append(None)
        ensemble = StrategyLMReaderEnsemble(readers)  # checks that the members read the same lower states
        c = ensemble.config
        fingerprint = [sorted(lm.weight_files.items()), LM_STATES_VERSION, c.max_length, c.max_messages]
        state_key = hashlib.sha256(json.dumps([*fingerprint, c.first_trained_layer]).encode()).hexdigest()[:12]

        def split_states(split: str, at: np.ndarray | None = None) -> list[np.ndarray]:
            """The split's lower states, or those of its examples ``at`` (taken from the whole split's cache when
            there is one, else computed for those examples alone and cached under their own name)."""
            whole = args.cache / f"lm-states-{state_key}-{split}.npz"
            if at is None or len(at) == len(splits[split]) or whole.is_file():
                every = cached_lower_states(readers[0], [e.dialogue for e in splits[split]], whole)
                return every if at is None else [every[i] for i in at]
            part = whole.with_name(f"{whole.stem}-{hashlib.sha256(at.tobytes()).hexdigest()[:8]}.npz")
            return cached_lower_states(readers[0], [splits[split][i].dialogue for i in at], part)

        states = {s: split_states(s) for s in probs}
        train_states: list[np.ndarray] = []
        if len(trained):  # the first --lm-reader-limit fitted rows: train's, then (--refit) valid's
            limit = len(targets) if args.lm_reader_limit is None else args.lm_reader_limit
            used = fit["train"][:limit]
            train_states = split_states("train", used)
            if "valid" in fit:
                train_states += [states["valid"][i] for i in fit["valid"][: limit - len(used)]]
        for k in trained:  # member k with seed seed + k, so a run that loads members 0..k-1 trains what one would
            train_lm_reader(
                readers[k],
                train_states,
                targets[: len(train_states)],
                states["valid"],
                first["valid"],
                sets["valid"],
                args.seed + k,
                args,
                refit,
            )
            for p in readers[k].delta.parameters():  # as it ships (float16): the figures below are the shipped model's
                p.data = p.data.half().float()
        member_lm_probs = [{s: r.probabilities_of_states(states[s]) for s in probs} for r in readers]
        lm_probs = {s: np.mean([m[s] for m in member_lm_probs], axis=0) for s in probs}
        lm_report = {
            "members": members_report(readers, member_lm_probs, lm_origins),
            "max_length": c.max_length,
            "alone_turns": alone_turns(lm_probs),
            "cpu_seconds": round(time.process_time() - lm_cpu, 1),
        }
    # the mix: the weights of the encoder and the LM reader with the best valid turn top-1 (the smallest on ties)
    weight_grid = []
    for we in (0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 1.0) if args.encoder else (0.0,):
        for wl in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0) if args.lm_reader else (0.0,):
            if we + wl > 1.0 + 1e-9:
                continue
            mixed = (1 - we - wl) * probs["valid"]
            mixed = mixed + (we * encoder_probs["valid"] if we else 0) + (wl * lm_probs["valid"] if wl else 0)
            top = mixed[first["valid"]].argmax(1)
            acc = float(hits(sets["valid"], top).mean())
            weight_grid.append({"encoder_weight": we, "lm_reader_weight": wl, "turn_top1_accuracy": round(acc, 4)})
    chosen_weights = max(
        weight_grid,
        key=lambda g: (g["turn_top1_accuracy"], -g["encoder_weight"] - g["lm_reader_weight"], -g["lm_reader_weight"]),
    )
    logger.info("mixing weight grid on valid: %s -> %s", weight_grid, chosen_weights)
    we, wl = chosen_weights["encoder_weight"], chosen_weights["lm_reader_weight"]
    if refit:  # valid is in-sample now: the grid above is for the record only
        we, wl = refit.encoder_weight, refit.lm_reader_weight
        logger.info("mixing weights of %s: encoder %.2f, LM reader %.2f", refit.folder, we, wl)
    if args.encoder:
        head.config.encoder_weight = we
        head.config.encoder_members = len(encoders) if we > 0 else 1
        encoder_report |= {"weight_grid_valid": weight_grid, "encoder_weight": we}
    if args.lm_reader:
        head.config.lm_reader_weight = wl
        head.config.lm_reader_members = len(readers) if wl > 0 else 1
        lm_report |= {"weight_grid_valid": weight_grid, "lm_reader_weight": wl}
    mlp_probs = probs
    probs = {
        s: (1 - we - wl) * probs[s] + (we * encoder_probs[s] if we else 0) + (wl * lm_probs[s] if wl else 0)
        for s in probs
    }
    valid_turns = [t.dialogue for t in turns["valid"]]
    grid = []
    for fresh, penalty in [(f, p) for f in (False, True) for p in PENALTIES]:
        head.config.repetition_penalty, head.config.fresh_secondary = penalty, fresh
        chosen = chosen_for(probs["valid"][first["valid"]], valid_turns, head.config)
        r = score_turns(chosen, turns["valid"])
        grid.append(
            {
                "penalty": penalty,
                "fresh_secondary": fresh,
                "turn_top1_accuracy": r["turn_top1_accuracy"],
                "repetition_rate": r["repetition_rate"],
                "message_accuracy": score_strategies(
                    chosen_for(probs["valid"], [e.dialogue for e in splits["valid"]], head.config), splits["valid"]
                )["accuracy"],
            }
        )
    # repetition must stay <= 0.30 on unseen dialogues too: on valid, below it by two standard errors of a 0.30 rate
    limit = repetition_bound(len(turns["valid"]))
    ok = [g for g in grid if g["repetition_rate"] <= limit] or [min(grid, key=lambda g: g["repetition_rate"])]
    best = max(ok, key=lambda g: (g["turn_top1_accuracy"], -g["penalty"], not g["fresh_secondary"]))
    if refit:
        best = {
            "penalty": refit.repetition_penalty,
            "fresh_secondary": refit.fresh_secondary,
            "margin": refit.repetition_margin,
            "from": str(refit.folder),
        }
    head.config.repetition_penalty, head.config.fresh_secondary = best["penalty"], best["fresh_secondary"]
    head.config.repetition_margin = float(best.get("margin", 0.0))
    logger.info("repetition rule grid on valid (repetition at most %.4f): %s -> %s", limit, grid, best)

    if args.valid_only:
        valid_plain = [[ESCONV_STRATEGIES[int(p.argmax())]] for p in probs["valid"]]
        ablation = {
            "features": features,
            "targets": args.targets,
            "members": args.members,
            "kept_epochs": head.config.metrics["kept_epochs"],
            "turn_top1_accuracy": score_turns([valid_plain[i] for i in first["valid"]], turns["valid"])[
                "turn_top1_accuracy"
            ],
            "message_accuracy": score_strategies(valid_plain, splits["valid"])["accuracy"],
            "penalty": head.config.repetition_penalty,
            "grid": grid,
            "head_training_cpu_seconds": round(train_cpu, 1),
            "encoder": encoder_report,
            "lm_reader": lm_report,
        }
        if args.combiner_cv:
            groups = np.array([k for k, d in enumerate(dialogues["valid"]) for _ in turn_examples([d])])
            opening = first["valid"]
            model_probs = {"mlp": mlp_probs["valid"][opening]}
            model_probs |= {"encoder": encoder_probs["valid"][opening]} if encoder_probs else {}
            model_probs |= {"lm_reader": lm_probs["valid"][opening]} if lm_probs else {}
            ablation["combiner_cv"] = combiner_cv(model_probs, sets["valid"], groups)
        print(json.dumps(ablation))
        return
    test, test_turns = splits["test"], turns["test"]
    planner_chosen = chosen_for(probs["test"], [e.dialogue for e in test], head.config)
    plain = [[ESCONV_STRATEGIES[int(p.argmax())]] for p in probs["test"]]
    counts = np.bincount(y["train"], minlength=n)
    majority = ESCONV_STRATEGIES[int(counts.argmax())]
    turn_majority = majority_strategy([t.strategies for t in turns["train"]])

    def at(chosen: list[list[str]], rows: np.ndarray) -> list[list[str]]:
        return [chosen[i] for i in rows]

    valid_plain = [[ESCONV_STRATEGIES[int(p.argmax())]] for p in probs["valid"]]
    report: dict[str, Any] = {
        "data": {s: len(ex) for s, ex in splits.items()},
        "turn_data": {s: len(t) for s, t in turns.items()},
        "features": features,
        "targets": args.targets,
        "planner": score_strategies(planner_chosen, test),
        "planner_without_penalty": score_strategies(plain, test),
        "majority_class": {**score_strategies([[majority]] * len(test), test), "strategy": majority},
        "human_references": {
            "repetition_rate": round(repetition_rate([[e.strategy] for e in test], test), 4),
            "distribution": {s: round(float((y["test"] == i).mean()), 4) for i, s in enumerate(ESCONV_STRATEGIES)},
        },
        "turns": {
            "planner": score_turns(at(planner_chosen, first["test"]), test_turns),
            "planner_without_penalty": score_turns(at(plain, first["test"]), test_turns),
            "majority_class": {
                **score_turns([[turn_majority]] * len(test_turns), test_turns),
                "strategy": turn_majority,
            },
            "human_references": {
                "repetition_rate": score_turns([[t.strategies[0]] for t in test_turns], test_turns)["repetition_rate"]
            },
        },
        "valid": {
            "planner_turns": score_turns(
                at(chosen_for(probs["valid"], [e.dialogue for e in splits["valid"]], head.config), first["valid"]),
                turns["valid"],
            ),
            "planner_without_penalty_turns": score_turns(at(valid_plain, first["valid"]), turns["valid"]),
            "planner_without_penalty_messages": score_strategies(valid_plain, splits["valid"]),
            "majority_class_turns": score_turns([[turn_majority]] * len(turns["valid"]), turns["valid"]),
        },
        "repetition_penalty_grid_valid": grid,
        "repetition_limit_valid": round(limit, 4),
    }
    if refit:  # trained on valid too: its figures above are in-sample, and every choice was the earlier planner's
        report["valid_in_sample"] = report.pop("valid")
        report["refit"] = {
            "from": str(refit.folder),
            "fit_data": {s: len(r) for s, r in fit.items()},
            "choices": {k: v for k, v in asdict(refit).items() if k != "folder"},
        }
    if args.lm_limit:
        lm_chosen, lm_rows = lm_alone(test, args.lm_limit)
        report["lm_alone"] = {
            **score_strategies(lm_chosen, [test[i] for i in lm_rows]),
            "model": "smollm2-135m-instruct, zero-shot",
        }
        report["planner_on_lm_subset"] = score_strategies(
            [planner_chosen[i] for i in lm_rows], [test[i] for i in lm_rows]
        )
    head.config.metrics.update(
        {
            "test_accuracy": report["planner"]["accuracy"],
            "test_turn_top1_accuracy": report["turns"]["planner"]["turn_top1_accuracy"],
            "test_repetition_rate": report["planner"]["repetition_rate"],
        }
    )
    report["training"] = {
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "feature_cpu_seconds": round(feature_cpu, 1),
        "head_training_cpu_seconds": round(train_cpu, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    report["encoder"] = encoder_report
    report["lm_reader"] = lm_report
    head.save_pretrained(args.out)
    kept = len(encoders) if head.config.encoder_weight > 0 else 0
    write_members(args.out, [e.delta for e in encoders[:kept]], origins, member_files, saved_members)
    kept = len(readers) if head.config.lm_reader_weight > 0 else 0
    write_members(args.out, [r.delta for r in readers[:kept]], lm_origins, lm_reader_files, saved_lm_readers)
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("repetition_penalty_grid_valid",)}, indent=2)[:6000])


if __name__ == "__main__":
    main()

"""The adapter + compact LM at work: emotion labels read from the LM, and the tree's texts written by it.

``AdapterReasoner`` joins a trained ``FusionAdapter`` (its soft prefix and the LM's LoRA) to a ``CompactLM``:

- ``label_probabilities(tokens)``: the prompt ``INSTRUCTIONS["reason"]`` with the prefix, the assistant turn begun
  with ``LABEL_CUE``, and the LM's next-token distribution over the seven label words (`` neutral``,
  `` happiness``, ...), temperature-calibrated on validation data: the adapter+LM's emotion distribution;
- ``fuse(results, evidence)``: that distribution as a ``FusedEmotion`` (the same type late fusion returns);
- ``generate(task, tokens, ...)``: greedy text for a curriculum task (``caption``, ``reason``, ``reply``);
- ``write(tree)``: the tree's ``cause``, ``appraisal`` and ``rationale`` texts, written by the LM with its LoRA
  switched off, from the structured nodes turned into plain facts (it never changes a structured value). The
  reply stays the planner's (its strategies); ``generate("reply", ...)`` gives the LoRA-tuned ESConv reply, which
  does not follow planned strategies yet.

Batches are built here once (``build_batch``) and shared by training (``scripts/train_fusion_adapter.py``) and
inference, so the prompt the adapter learnt is the prompt it meets.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn

from affectlens.labels import CANONICAL_EMOTIONS, valence_arousal
from affectlens.types import AnalysisResult
from fusion.adapter import (
    INSTRUCTIONS,
    LABEL_CUE,
    SIGNALS,
    SYSTEM_PROMPT,
    FusionAdapter,
    ModalityTokens,
    TokenBatch,
    label_token_ids,
    tokens_from_results,
)
from fusion.late import FusedEmotion, ModalityEvidence

if TYPE_CHECKING:
    from affectlens.tree import AffectTree
    from fusion.lm import CompactLM

logger = logging.getLogger(__name__)

#: Manifest group of the shipped adapter (``weights/fusion-adapter/``).
ADAPTER_WEIGHTS: Final = "fusion-adapter"
#: The fused result abstains under this top probability (the same rule as late fusion's default).
ABSTAIN_BELOW: Final = 0.35


@dataclass
class PromptPieces:
    """Token ids around the soft prefix: ``before`` + prefix + ``after`` (+ the assistant's target)."""

    before: list[int]
    after: list[int]


def prompt_pieces(tokenizer: Any, task: str, **fields: str) -> PromptPieces:
    """The chat prompt of ``task`` split at ``SIGNALS``; ``fields`` fill the instruction (``text``, ``facts``)."""
    user = f"Signals: {SIGNALS}. " + INSTRUCTIONS[task].format(**fields)
    text = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    before, after = text.split(SIGNALS)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return PromptPieces(encode(before), encode(after))


def build_batch(
    embeddings: nn.Module,
    prefix: torch.Tensor,
    prompts: Sequence[PromptPieces],
    targets: Sequence[list[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Right-padded ``(inputs_embeds (B, L, H), attention_mask (B, L), labels (B, L) with -100 outside the
    targets, last (index of each row's last real position))`` from ``prefix`` ``(B, K, H)``."""
    rows, labels, lengths = [], [], []
    for b, (pieces, target) in enumerate(zip(prompts, targets, strict=True)):
        ids_before = torch.tensor(pieces.before, dtype=torch.long)
        ids_after = torch.tensor(pieces.after + target, dtype=torch.long)
        row = torch.cat([embeddings(ids_before), prefix[b], embeddings(ids_after)])
        label = torch.full((len(row),), -100, dtype=torch.long)
        if target:
            label[-len(target) :] = torch.tensor(target)
        rows.append(row)
        labels.append(label)
        lengths.append(len(row))
    width = max(lengths)
    hidden = prefix.shape[-1]
    pad = embeddings(torch.tensor([pad_id])).detach()
    inputs = torch.stack([torch.cat([r, pad.expand(width - len(r), hidden)]) for r in rows])
    mask = torch.stack([torch.arange(width) < n for n in lengths]).long()
    label_t = torch.stack([torch.cat([lb, torch.full((width - len(lb),), -100)]) for lb in labels])
    return inputs, mask, label_t, [n - 1 for n in lengths]


@contextlib.contextmanager
def lora_off(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its base LM: every ``LoRALinear`` scaling set to 0 inside the block."""
    from fusion.lm import LoRALinear

    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    saved = [m.scaling for m in layers]
    for m in layers:
        m.scaling = 0.0
    try:
        yield
    finally:
        for m, s in zip(layers, saved, strict=True):
            m.scaling = s


class AdapterReasoner:
    """A trained ``FusionAdapter`` and the ``CompactLM`` it feeds (LoRA applied and loaded); see the module
    docstring. ``name`` is what the tree records as the fuser and the writer."""

    def __init__(self, adapter: FusionAdapter, lm: CompactLM, lora: dict[str, torch.Tensor] | None = None) -> None:
        from fusion.lm import apply_lora, load_lora_state_dict

        self.adapter = adapter.eval()
        self.lm = lm
        c = adapter.config
        if c.lm_hidden != lm.hidden_size:
            raise ValueError(f"the adapter projects to {c.lm_hidden} wide embeddings; {lm.name} has {lm.hidden_size}")
        if lora:
            apply_lora(lm.model, r=c.lora_r, alpha=c.lora_alpha, targets=c.lora_targets)
            load_lora_state_dict(lm.model, lora)
        self.label_ids = list(c.label_token_ids) or label_token_ids(lm.tokenizer)
        self.name = f"fusion-adapter+{lm.name}"
        tok = lm.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.cue_ids = tok(LABEL_CUE, add_special_tokens=False)["input_ids"]

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, lm: CompactLM | None = None) -> AdapterReasoner:
        """The shipped adapter (manifest group ``fusion-adapter``) or the one in ``directory``, on ``lm`` (default:
        the LM named in the adapter's config)."""
        from affectlens.registry import create_language_model

        if directory is None:
            from affectlens.weights import locate_group

            directory = locate_group(ADAPTER_WEIGHTS).path
        adapter, lora = FusionAdapter.from_pretrained(directory)
        return cls(adapter, lm or create_language_model(adapter.config.lm_name), lora)

    @property
    def embeddings(self) -> nn.Module:
        return self.lm.model.get_input_embeddings()

    def _logits_at(self, inputs: torch.Tensor, mask: torch.Tensor, last: list[int]) -> torch.Tensor:
        hidden = self.lm.model.model(inputs_embeds=inputs, attention_mask=mask).last_hidden_state
        rows = hidden[torch.arange(len(last)), torch.tensor(last)]
        return self.lm.model.lm_head(rows)

    @torch.inference_mode()
    def label_logits(self, samples: Sequence[ModalityTokens], batch_size: int = 32) -> np.ndarray:
        """``(N, 7)`` raw label logits (``CANONICAL_EMOTIONS`` order) read after ``LABEL_CUE``."""
        pieces = prompt_pieces(self.lm.tokenizer, "reason")
        out = []
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            prefix, _ = self.adapter(TokenBatch.collate(chunk, self.adapter.config))
            inputs, mask, _, last = build_batch(
                self.embeddings, prefix, [pieces] * len(chunk), [self.cue_ids] * len(chunk), self.pad_id
            )
            out.append(self._logits_at(inputs, mask, last)[:, self.label_ids].float().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CANONICAL_EMOTIONS)), np.float32)

    def label_probabilities(self, samples: Sequence[ModalityTokens]) -> np.ndarray:
        """``(N, 7)`` calibrated distributions (the adapter config's temperature)."""
        z = self.label_logits(samples) / self.adapter.config.temperature
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def __call__(self, evidence: Sequence[ModalityEvidence], results: Sequence[AnalysisResult] = ()) -> FusedEmotion:
        """The ``fusion.tree.Fuser`` call: ``fuse(results)`` (the modality tokens come from the results)."""
        return self.fuse(results)

    def fuse(self, results: Sequence[AnalysisResult], evidence: Sequence[ModalityEvidence] = ()) -> FusedEmotion:
        """The adapter+LM's emotion for one moment, as a ``FusedEmotion`` (weights: the modalities present)."""
        tokens = tokens_from_results(results, self.adapter.config)
        if not tokens.present():
            raise ValueError("nothing to fuse: no face, voice or words in the results")
        p = self.label_probabilities([tokens])[0]
        probs = dict(zip(CANONICAL_EMOTIONS, p.tolist(), strict=True))
        valence, arousal = valence_arousal(probs)
        present = tokens.present()
        return FusedEmotion(
            probs, valence, arousal, {m: 1.0 / len(present) for m in present}, bool(p.max() < ABSTAIN_BELOW), self.name
        )

    @torch.inference_mode()
    def generate(self, task: str, tokens: ModalityTokens, max_new_tokens: int = 48, **fields: str) -> str:
        """Greedy text for ``task`` from the soft prefix of ``tokens`` (LoRA on)."""
        prefix, _ = self.adapter(TokenBatch.collate([tokens], self.adapter.config))
        pieces = prompt_pieces(self.lm.tokenizer, task, **fields)
        inputs, mask, _, _ = build_batch(self.embeddings, prefix, [pieces], [[]], self.pad_id)
        return self._greedy(inputs, mask, max_new_tokens)

    def _greedy(self, inputs: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> str:
        out = self.lm.model.generate(
            inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=list(self.lm.eos_token_ids), pad_token_id=self.pad_id,
        )  # fmt: skip
        return str(self.lm.tokenizer.decode(out[0], skip_special_tokens=True)).strip()

    @torch.inference_mode()
    def _ask_base(self, question: str, max_new_tokens: int) -> str:
        """The base LM (LoRA off), no prefix: a plain chat question."""
        text = (
            f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        ids = torch.tensor([self.lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
        with lora_off(self.lm.model):
            return self._greedy(self.embeddings(ids), torch.ones_like(ids), max_new_tokens)

    def write(self, tree: AffectTree, results: Sequence[AnalysisResult] = ()) -> dict[str, str]:
        """The tree's texts (see the module docstring); only keys whose inputs exist are returned."""
        facts = tree_facts(tree)
        out: dict[str, str] = {}
        words = " ".join(tree.cause_sentences())
        if words:
            out["cause"] = _one_sentence(self._ask_base(
                f"{facts}\nIn one sentence, what made the person feel this way? Quote their words if it helps.", 40
            ))  # fmt: skip
        out["appraisal"] = _one_sentence(
            self._ask_base(f"{facts}\nIn one sentence, what does the person most need right now?", 32)
        )
        out["rationale"] = _one_sentence(
            self._ask_base(f"{facts}\nIn one sentence, explain which signals show this emotion.", 40)
        )
        return out


def _one_sentence(text: str) -> str:
    text = " ".join(text.split())
    for end in (". ", "! ", "? "):
        if end in text:
            return text[: text.index(end) + 1]
    return text


def tree_facts(tree: AffectTree) -> str:
    """The structured nodes as short plain-text facts (what the LM writes from)."""
    emotion = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
    lines = [f"- emotion: {emotion.get('state', emotion.get('label', '?'))} (confidence {tree.emotion.confidence:.2f})"]
    for node in (tree.expressions, tree.cause, tree.appraisal):
        cues = "; ".join(e.cue for e in node.evidence if e.cue)[:300]
        if cues:
            lines.append(f"- {node.stage}: {cues}")
    words = " ".join(tree.cause_sentences())
    if words:
        lines.append(f'- the person said: "{words[:300]}"')
    return "Facts from the analysis:\n" + "\n".join(lines)


def build_default_reasoner() -> AdapterReasoner:
    """The shipped adapter on the default compact LM."""
    return AdapterReasoner.from_pretrained()


def build_default_writer() -> AdapterReasoner:
    """The tree writer ``affectlens analyze --tree --explain`` uses: the shipped adapter + LM."""
    return build_default_reasoner()

"""The compact language model: SmolLM2-135M-Instruct (or any local Hugging Face causal LM), soft-token prefixes, LoRA.

``create_language_model()`` (``affectlens.registry``) builds a ``CompactLM``. Options, parsed in one place
(``parse_language_model_spec``):

- a registered name: ``smollm2-135m-instruct`` (the default; the manifest's GGUF file, Q4_1), or
  ``hf-causal-lm`` with ``model_path=...``;
- ``hf:<repo-or-path>``: any Hugging Face causal LM, from a local folder, a ``.gguf`` file or the local
  Hugging Face cache (``local_files_only``); the hub is asked only when the user sets ``AFFECTLENS_ALLOW_HUB=1``;
- a path to a local model folder (``save_pretrained`` output) or ``.gguf`` file, with no prefix.

A GGUF file is dequantised to float32 once (about 15 s for SmolLM2-135M) and cached as safetensors, with its
config and tokenizer, in ``<weights cache>/dequantised/<sha256 of the GGUF>/``; later loads read that folder.

Soft tokens (LLaVA style): put ``PREFIX_PLACEHOLDER`` (``"<affect>"``) in a message, e.g.
``{"role": "user", "content": "Signals: <affect>\\nHow does the speaker feel?"}``. The text is tokenised around
it and the placeholder becomes one ``PREFIX_SLOT`` id (-200, never a real token); ``embed`` replaces that slot
by the ``P`` rows of ``prefix_embeds`` (``(P, hidden)`` or ``(B, P, hidden)``), so the model reads
``L - 1 + P`` positions. ``prefix_position="start"`` or an int index places the prefix without a placeholder.
A placeholder with no ``prefix_embeds`` is dropped, so one prompt serves with and without soft tokens.

LoRA is self-contained (``LoRALinear``, ``apply_lora``, ``lora_state_dict``, ``load_lora_state_dict``,
``merge_lora``); no peft. Greedy decoding with the model's KV cache; torch threads stay as the caller set them.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import torch
from torch import nn

from affectlens import weights
from affectlens.errors import SpecError, WeightsError
from affectlens.registry import list_models, register, register_spec_parser

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

#: Manifest entry (and registered name) of the default LM.
DEFAULT_LM: Final = "smollm2-135m-instruct"
#: Registered name of the builder behind ``hf:<repo-or-path>`` specs and plain model paths.
HF_BUILDER: Final = "hf-causal-lm"
HF_PREFIX: Final = "hf:"
#: Where soft tokens go in a message's text (replaced at embedding time, never tokenised).
PREFIX_PLACEHOLDER: Final = "<affect>"
#: The id that stands for the soft tokens in a prompt's ids (LLaVA's ``IMAGE_TOKEN_INDEX``); no real token.
PREFIX_SLOT: Final = -200
#: Marker written last into a dequantised-GGUF cache folder: source sha256 and the sizes of the files.
CACHE_MARKER: Final = "affectlens-dequantised.json"

#: SmolLM2's chat template (ChatML with a default system message), as its GGUF file carries it.
SMOLLM2_CHAT_TEMPLATE: Final = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Message = Mapping[str, str]
#: A user message (str, wrapped in the chat template when the tokenizer has one), a conversation, or
#: ready token ids (1-D ``LongTensor``, may hold one ``PREFIX_SLOT``).
Prompt = str | Sequence[Message] | torch.Tensor
#: ``"placeholder"``: where ``PREFIX_PLACEHOLDER`` is; ``"start"``: before the first token; an int: before that
#: prompt token (negative counts from the end, like ``list.insert``).
PrefixPosition = Literal["placeholder", "start"] | int
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenerationResult:
    """One generated continuation. ``token_ids`` exclude the stop token; times are wall-clock seconds."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int  # positions the model read before generating, soft tokens included
    time_to_first_token_s: float  # from the call to the first token chosen (tokenising + prefill)
    total_s: float
    finish_reason: FinishReason  # "stop": a stop token came; "length": max_new_tokens reached

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def tokens_per_s(self) -> float:
        return self.num_tokens / self.total_s if self.total_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "token_ids": list(self.token_ids), "num_tokens": self.num_tokens}


def _forward_names(model: nn.Module) -> tuple[str, bool]:
    """The KV-cache keyword of ``model.forward`` (``cache`` from transformers 5.x, ``past_key_values`` before)
    and whether it takes ``logits_to_keep``."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


class CompactLM:
    """A causal LM and its tokenizer: chat prompts, soft-token prefixes, greedy generation, next-token scores.

    ``generate`` / ``score_next`` are the people-facing layer (``torch.inference_mode``, KV cache);
    ``chat_ids`` / ``prompt_ids`` / ``embed`` are the tensor layer (``embed`` keeps gradients, for training a
    projector or LoRA). The model stays on the device and dtype it came with.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        name: str = HF_BUILDER,
        source: str = "",
        weight_files: dict[str, str] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.source = source  # the folder or file the weights were read from ("" when built in memory)
        self.weight_files = dict(weight_files or {})  # manifest name -> sha256 of the files used
        self._cache_kw, self._has_logits_to_keep = _forward_names(model)
        eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
        ids = {*([eos] if isinstance(eos, int) else (eos or ()))}
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        self.eos_token_ids: tuple[int, ...] = tuple(sorted(ids))

    # -- tensor layer ---------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        """Width of the input embeddings (576 for SmolLM2-135M): the last dim ``prefix_embeds`` must have."""
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def _encode_text(self, text: str) -> list[int]:
        parts = text.split(PREFIX_PLACEHOLDER)
        if len(parts) > 2:
            raise ValueError(
                f"the prompt holds {PREFIX_PLACEHOLDER!r} {len(parts) - 1} times; one prefix goes in one place"
            )
        encoded = [self.tokenizer(part, add_special_tokens=False)["input_ids"] if part else [] for part in parts]
        ids = list(encoded[0])
        for part in encoded[1:]:
            ids += [PREFIX_SLOT, *part]
        return ids

    def chat_ids(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of ``messages`` rendered by the chat template; a ``PREFIX_PLACEHOLDER`` becomes ``PREFIX_SLOT``.

        With ``add_generation_prompt`` the ids end where the assistant's reply starts.
        """
        if not self.tokenizer.chat_template:
            raise ValueError(f"{self.name}: the tokenizer has no chat template; pass a string or token ids")
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return self._encode_text(str(text))

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Ids of a prompt: a string is one user message when the tokenizer has a chat template (else tokenised
        as is, no special tokens added); a conversation goes through ``chat_ids``; a tensor is used as is."""
        if isinstance(prompt, torch.Tensor):
            if prompt.dim() != 1:
                raise ValueError(f"token ids must be 1-D, got shape {tuple(prompt.shape)}")
            return [int(i) for i in prompt.tolist()]
        if isinstance(prompt, str):
            if self.tokenizer.chat_template:
                return self.chat_ids([{"role": "user", "content": prompt}])
            return self._encode_text(prompt)
        return self.chat_ids(prompt)

    def embed(self, input_ids: torch.Tensor | Sequence[int], prefix_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings ``(B, L', hidden)`` of ``input_ids`` (``(L,)`` or ``(B, L)``), differentiable.

        Each row's one ``PREFIX_SLOT`` is replaced by the ``P`` rows of ``prefix_embeds`` (``(P, hidden)``, shared
        by every row, or ``(B, P, hidden)``; one row of ids is repeated for ``B`` prefixes), so ``L' = L - 1 + P``.
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long, device=self.device)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        table = self.model.get_input_embeddings()
        slots = ids == PREFIX_SLOT
        if prefix_embeds is None:
            if bool(slots.any()):
                raise ValueError("the ids hold a PREFIX_SLOT but no prefix_embeds were given")
            return table(ids)
        prefix = prefix_embeds.to(device=self.device, dtype=table.weight.dtype)
        if prefix.dim() == 2:
            prefix = prefix.unsqueeze(0)
        if prefix.dim() != 3 or prefix.shape[-1] != self.hidden_size:
            raise ValueError(
                f"prefix_embeds must be (P, {self.hidden_size}) or (B, P, {self.hidden_size}), got {tuple(prefix_embeds.shape)}"
            )
        if ids.shape[0] == 1 and prefix.shape[0] > 1:
            ids, slots = ids.expand(prefix.shape[0], -1), slots.expand(prefix.shape[0], -1)
        if prefix.shape[0] not in (1, ids.shape[0]):
            raise ValueError(f"{prefix.shape[0]} prefixes for {ids.shape[0]} rows of ids")
        counts = slots.sum(dim=1)
        if not bool((counts == 1).all()):
            raise ValueError(f"each row of ids needs exactly one PREFIX_SLOT, found {counts.tolist()}")
        tokens = table(ids.clamp(min=0))
        rows = []
        for row in range(ids.shape[0]):
            at = int(slots[row].nonzero()[0, 0])
            soft = prefix[row if prefix.shape[0] > 1 else 0]
            rows.append(torch.cat([tokens[row, :at], soft, tokens[row, at + 1 :]]))
        return torch.stack(rows)

    def _place_prefix(self, ids: list[int], has_prefix: bool, position: PrefixPosition) -> list[int]:
        slots = ids.count(PREFIX_SLOT)
        if slots > 1:
            raise ValueError(f"the prompt holds {slots} prefix slots; one prefix goes in one place")
        if not has_prefix:
            return [i for i in ids if i != PREFIX_SLOT]
        if position == "placeholder":
            if slots == 0:
                raise ValueError(
                    f"prefix_embeds were given but the prompt has no {PREFIX_PLACEHOLDER!r}; put it in a message "
                    "or pass prefix_position='start' or a token index"
                )
            return ids
        if slots:
            raise ValueError(f"the prompt has {PREFIX_PLACEHOLDER!r}; use prefix_position='placeholder' or remove it")
        index = 0 if position == "start" else position
        if not isinstance(index, int) or isinstance(index, bool) or not -len(ids) <= index <= len(ids):
            raise ValueError(f"prefix_position must be 'placeholder', 'start' or an int in [-{len(ids)}, {len(ids)}]")
        placed = list(ids)
        placed.insert(index, PREFIX_SLOT)
        return placed

    def _inputs(self, prompt: Prompt, prefix_embeds: torch.Tensor | None, position: PrefixPosition) -> torch.Tensor:
        ids = self._place_prefix(self.prompt_ids(prompt), prefix_embeds is not None, position)
        if not ids:
            raise ValueError("empty prompt")
        return self.embed(ids, prefix_embeds)

    def _forward(self, cache: Any = None, **inputs: Any) -> Any:
        kwargs: dict[str, Any] = {"use_cache": True, **inputs}
        if cache is not None:
            kwargs[self._cache_kw] = cache
        if self._has_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs)

    # -- people layer ---------------------------------------------------------------------------------------

    def generate(
        self,
        prompt: Prompt,
        max_new_tokens: int = 64,
        *,
        prefix_embeds: torch.Tensor | None = None,
        prefix_position: PrefixPosition = "placeholder",
        stop_token_ids: Sequence[int] | None = None,
    ) -> GenerationResult:
        """Greedy continuation of ``prompt``, stopping at a stop token (the model's eos by default) or after
        ``max_new_tokens``. ``prefix_embeds``: ``(P, hidden)`` or ``(1, P, hidden)`` soft tokens (module doc)."""
        if prefix_embeds is not None and prefix_embeds.dim() == 3 and prefix_embeds.shape[0] != 1:
            raise ValueError(f"generate takes one prefix, got {prefix_embeds.shape[0]}; use generate_batch")
        return self.generate_batch(
            prompt,
            max_new_tokens,
            prefix_embeds=prefix_embeds,
            prefix_position=prefix_position,
            stop_token_ids=stop_token_ids,
        )[0]

    def generate_batch(
        self,
        prompt: Prompt,
        max_new_tokens: int = 64,
        *,
        prefix_embeds: torch.Tensor | None = None,
        prefix_position: PrefixPosition = "placeholder",
        stop_token_ids: Sequence[int] | None = None,
    ) -> list[GenerationResult]:
        """``generate`` for ``B`` prefixes (``(B, P, hidden)``) on one prompt, decoded together; one result each."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        stops = set(self.eos_token_ids if stop_token_ids is None else stop_token_ids)
        started = time.perf_counter()
        with torch.inference_mode():
            embeds = self._inputs(prompt, prefix_embeds, prefix_position)
            rows = embeds.shape[0]
            out = self._forward(inputs_embeds=embeds)
            generated: list[list[int]] = [[] for _ in range(rows)]
            finish: list[FinishReason] = ["length"] * rows
            first_token_s = 0.0
            for step in range(max_new_tokens):
                chosen = out.logits[:, -1].argmax(dim=-1)
                if step == 0:
                    first_token_s = time.perf_counter() - started
                for row, token in enumerate(chosen.tolist()):
                    if finish[row] == "stop":
                        continue
                    if token in stops:
                        finish[row] = "stop"
                    else:
                        generated[row].append(int(token))
                if all(f == "stop" for f in finish) or step == max_new_tokens - 1:
                    break
                out = self._forward(cache=_cache_of(out), input_ids=chosen.unsqueeze(1))
        total = time.perf_counter() - started
        results = [
            GenerationResult(
                text=str(self.tokenizer.decode(tokens, skip_special_tokens=True)),
                token_ids=tuple(tokens),
                prompt_tokens=int(embeds.shape[1]),
                time_to_first_token_s=first_token_s,
                total_s=total,
                finish_reason=reason,
            )
            for tokens, reason in zip(generated, finish, strict=True)
        ]
        logger.debug(
            "%s: %d x %d tokens after %d prompt positions in %.2f s (first after %.2f s)",
            self.name,
            rows,
            max(r.num_tokens for r in results),
            results[0].prompt_tokens,
            total,
            first_token_s,
        )
        return results

    def score_next(
        self,
        prompt: Prompt,
        candidate_ids: Sequence[int],
        *,
        prefix_embeds: torch.Tensor | None = None,
        prefix_position: PrefixPosition = "placeholder",
    ) -> torch.Tensor:
        """Next-token log-probabilities after ``prompt``, restricted to ``candidate_ids`` and renormalised over
        them (``logsumexp == 0``): shape ``(C,)``, or ``(B, C)`` for a ``(B, P, hidden)`` prefix. Float32, CPU.

        Reads a label distribution from the LM: pair it with ``label_token_ids`` and a prompt whose answer starts
        with the label (a chat prompt ends where the assistant's reply begins).
        """
        candidates = [int(c) for c in candidate_ids]
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if not candidates or len(set(candidates)) != len(candidates):
            raise ValueError(f"candidate_ids must be distinct and non-empty, got {candidates}")
        if not all(0 <= c < vocab for c in candidates):
            raise ValueError(f"candidate_ids must lie in [0, {vocab}), got {candidates}")
        with torch.inference_mode():
            embeds = self._inputs(prompt, prefix_embeds, prefix_position)
            logits = self._forward(inputs_embeds=embeds).logits[:, -1].float()
            picked = logits.log_softmax(dim=-1)[:, candidates]
            scores = (picked - picked.logsumexp(dim=-1, keepdim=True)).cpu()
        batched = prefix_embeds is not None and prefix_embeds.dim() == 3
        return scores if batched else scores[0]

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """The first token of each label as a reply would start with it: candidates for ``score_next``.

        Raises ``ValueError`` when two labels share their first token (``score_next`` could not tell them apart).
        """
        firsts = [self.tokenizer(label, add_special_tokens=False)["input_ids"][:1] for label in labels]
        if any(not ids for ids in firsts):
            raise ValueError(f"a label encodes to no token: {list(labels)}")
        ids = [ids[0] for ids in firsts]
        shared = sorted({label for label, i in zip(labels, ids, strict=True) if ids.count(i) > 1})
        if shared:
            raise ValueError(f"labels {shared} start with the same token; reword them")
        return ids

    # -- files ----------------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model (safetensors + config) and tokenizer into ``folder``; ``from_pretrained`` reads it."""
        if any(isinstance(m, LoRALinear) for m in self.model.modules()):
            raise ValueError("the model carries LoRA layers: merge_lora(model) first, or save lora_state_dict(model)")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike[str],
        *,
        pretrained: bool = True,
        name: str = HF_BUILDER,
        dtype: torch.dtype = torch.float32,
        weight_files: dict[str, str] | None = None,
    ) -> CompactLM:
        """Load a causal LM folder (or hub id found in the local Hugging Face cache) with its tokenizer.

        Files are read locally only, unless the user set ``AFFECTLENS_ALLOW_HUB=1``. ``pretrained=False`` keeps
        the folder's architecture and tokenizer with random weights.
        """
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        local_only = not weights.hub_allowed()
        where = str(source)
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only)
            if pretrained:
                model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, local_files_only=local_only)
            else:
                config = AutoConfig.from_pretrained(where, local_files_only=local_only)
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except OSError as exc:
            hint = "" if not local_only else "; set AFFECTLENS_ALLOW_HUB=1 to let it download from the hub"
            raise WeightsError(
                f"{where}: no causal LM there (not a model folder nor in the local cache){hint}"
            ) from exc
        return cls(model, tokenizer, name=name, source=where, weight_files=weight_files)


# -- GGUF: dequantise once, then load the cached safetensors ---------------------------------------------------


def dequantised_dir(sha256: str, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder of a GGUF file's float32 weights: ``<cache_root or weights cache>/dequantised/<sha256>``."""
    return Path(cache_root or weights.cache_dir()) / "dequantised" / sha256


def _cache_is_complete(folder: Path, sha256: str) -> bool:
    marker = folder / CACHE_MARKER
    if not marker.is_file():
        return False
    try:
        record = json.loads(marker.read_text())
        files = record["files"]
        return record.get("gguf_sha256") == sha256 and all(
            (folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items()
        )
    except (OSError, ValueError, KeyError, AttributeError):
        return False


def _dequantise_gguf(gguf: Path, into: Path) -> None:
    """Load ``gguf`` through transformers (dequantising to float32) and save it as a plain model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; transformers still marks the model as GGUF-quantised and refuses to save it.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (the attribute is not in the type stubs)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(into)
    tokenizer.save_pretrained(into)


def ensure_dequantised(
    gguf: str | os.PathLike[str], sha256: str, cache_root: str | os.PathLike[str] | None = None
) -> Path:
    """The cached float32 model folder of ``gguf`` (whose sha256 the caller verified), made on first use.

    The folder is built under a temporary name and renamed into place with its marker written, so an
    interrupted run leaves no half folder behind; a folder that fails its marker check is rebuilt.
    """
    folder = dequantised_dir(sha256, cache_root)
    if _cache_is_complete(folder, sha256):
        return folder
    if folder.exists():
        logger.warning("%s: incomplete dequantised cache, rebuilding it", folder)
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{sha256[:12]}-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache folder should read like its neighbours
    try:
        started = time.perf_counter()
        logger.info("dequantising %s to float32 once (cached in %s)", gguf, folder)
        _dequantise_gguf(Path(gguf), staging)
        files = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        record = {"gguf_file": Path(gguf).name, "gguf_sha256": sha256, "dtype": "float32", "files": files}
        (staging / CACHE_MARKER).write_text(json.dumps(record, indent=2))
        try:
            os.replace(staging, folder)
        except OSError:
            if not _cache_is_complete(folder, sha256):  # another process won the race with a good copy: use it
                raise
        logger.info("dequantised %s in %.1f s", Path(gguf).name, time.perf_counter() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def load_gguf(
    gguf: str | os.PathLike[str],
    *,
    name: str = HF_BUILDER,
    sha256: str | None = None,
    cache_root: str | os.PathLike[str] | None = None,
    weight_files: dict[str, str] | None = None,
) -> CompactLM:
    """A ``CompactLM`` from a GGUF file, through its dequantised safetensors cache (``ensure_dequantised``)."""
    path = Path(gguf)
    digest = sha256 or weights.sha256_of(path)
    folder = ensure_dequantised(path, digest, cache_root)
    return CompactLM.from_pretrained(folder, name=name, weight_files=weight_files)


# -- tiny model for tests ------------------------------------------------------------------------------------

_TINY_CORPUS: Final = (
    "I am so happy today, thank you for your help!",
    "This is disgusting and makes me furious.",
    "I'm terrified of what the scan will show.",
    "She smiled, but her voice sounded sad and tired.",
    "The speaker looks calm and speaks slowly.",
    *["happiness\nsadness\nanger\nfear\nsurprise\ndisgust\nneutral"] * 4,  # whole-word labels for score_next
    "How does the speaker feel? Answer with one word.",
)
_TINY_SPECIALS: Final = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE (about 300 tokens) trained in memory, with SmolLM2's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=list(_TINY_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer


def tiny_language_model(seed: int = 0, **overrides: Any) -> CompactLM:
    """A random 2-layer, 32-wide Llama with ``tiny_tokenizer``, built in code (tests; no files, no download)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    vocab = tokenizer.get_vocab()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # wide enough that different inputs give different greedy tokens
        tie_word_embeddings=True,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|im_end|>"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return CompactLM(model, tokenizer, **{"name": "tiny-random-llama", **overrides})


# -- LoRA -----------------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """``base(x) + dropout(x) @ A^T @ B^T * alpha / r`` with ``base`` frozen; ``B`` starts at zero (identity)."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {r}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        dtype, device = base.weight.dtype, base.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (code that inspects ``proj.weight`` keeps working)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` equal to this layer (in eval mode): ``W + B @ A * alpha / r``."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        out = out.to(dtype=self.base.weight.dtype, device=self.base.weight.device)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + (self.lora_B @ self.lora_A) * self.scaling)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    dropout: float = 0.0,
) -> list[LoRALinear]:
    """Wrap every ``nn.Linear`` whose attribute name is in ``targets`` in a ``LoRALinear``; freeze the rest.

    Afterwards only the LoRA ``A``/``B`` matrices require gradients. Returns the new modules in model order.
    """
    model.requires_grad_(False)
    added: list[LoRALinear] = []
    for module in list(model.modules()):
        if isinstance(module, LoRALinear):
            continue
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                wrapped = LoRALinear(child, r=r, alpha=alpha, dropout=dropout)
                setattr(module, child_name, wrapped)
                added.append(wrapped)
    if not added:
        already = any(isinstance(m, LoRALinear) for m in model.modules())
        raise ValueError("LoRA is applied already" if already else f"no nn.Linear named any of {list(targets)}")
    for layer in added:
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    logger.debug("LoRA r=%d alpha=%s on %d layers (%s)", r, alpha, len(added), ", ".join(targets))
    return added


def _is_lora_key(key: str) -> bool:
    return key.endswith((".lora_A", ".lora_B"))


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA matrices of ``model`` only (detached copies), keyed as in ``model.state_dict()``."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if _is_lora_key(k)}


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy LoRA matrices into a model prepared by ``apply_lora`` with the same targets and rank.

    Raises ``ValueError`` naming the keys that are missing, unexpected or of another shape.
    """
    own = {k: v for k, v in model.state_dict().items() if _is_lora_key(k)}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(
            f"LoRA state does not fit: missing {missing[:4]}, unexpected {unexpected[:4]}, shape {shapes[:4]}"
        )
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(value)


@contextlib.contextmanager
def lora_swapped(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    r: int,
    alpha: float,
    targets: Sequence[str] = ("q_proj", "v_proj"),
) -> Iterator[None]:
    """Run ``model`` with the LoRA ``state`` (rank ``r``, ``alpha``, on ``targets``) inside the block.

    A model that carries LoRA layers of the same shape (e.g. the fusion adapter's) has them swapped: their
    matrices and scaling are saved, ``state`` loaded, and both restored afterwards. A model without LoRA gets
    ``apply_lora`` for the block and its plain ``nn.Linear`` layers back afterwards. Raises ``ValueError`` when
    ``state`` does not fit (another rank, targets or model).
    """
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    if not layers:
        grads = {name: p.requires_grad for name, p in model.named_parameters()}
        added = apply_lora(model, r=r, alpha=alpha, targets=targets)
        try:
            load_lora_state_dict(model, state)
            yield
        finally:
            _unwrap(model, added)
            for name, p in model.named_parameters():
                p.requires_grad_(grads.get(name, False))
        return
    saved = lora_state_dict(model)
    scalings = [m.scaling for m in layers]
    try:
        load_lora_state_dict(model, state)
        for m in layers:
            m.scaling = alpha / r
        yield
    finally:
        load_lora_state_dict(model, saved)
        for m, scaling in zip(layers, scalings, strict=True):
            m.scaling = scaling


def _unwrap(model: nn.Module, layers: Sequence[LoRALinear]) -> None:
    """Put back the base ``nn.Linear`` of each of ``layers`` (undoing ``apply_lora``)."""
    wanted = {id(layer) for layer in layers}
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if id(child) in wanted:
                setattr(module, child_name, child.base)


def merge_lora(model: nn.Module) -> int:
    """Replace every ``LoRALinear`` by its merged ``nn.Linear`` (for saving or faster inference); returns how many."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, child_name, child.merged())
                count += 1
    return count


# -- registry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageModelSpec:
    """A parsed ``create_language_model`` spec: the registered builder and the model path it gets, if any."""

    builder: str
    model_path: str | None = None


def parse_language_model_spec(spec: str) -> LanguageModelSpec:
    """The one parser of LM specs: a registered name, ``hf:<repo-or-path>``, or a local folder / ``.gguf`` path.

    Raises:
        SpecError (a ``ValueError``): anything else, with the valid forms listed.
    """
    names = list_models("language_model")
    if spec in names:
        return LanguageModelSpec(spec)
    if spec.startswith(HF_PREFIX) and spec[len(HF_PREFIX) :].strip():
        return LanguageModelSpec(HF_BUILDER, spec[len(HF_PREFIX) :].strip())
    path = Path(spec).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix == ".gguf"):
        return LanguageModelSpec(HF_BUILDER, str(path))
    raise SpecError(
        f"unknown language_model {spec!r}; registered: {', '.join(names)}; "
        f"or {HF_PREFIX}<repo-or-path>, or a local model folder or .gguf file"
    )


@register_spec_parser("language_model")
def _parse_for_registry(spec: str) -> tuple[str, dict[str, Any]]:
    parsed = parse_language_model_spec(spec)
    return parsed.builder, ({"model_path": parsed.model_path} if parsed.model_path else {})


@register("language_model", DEFAULT_LM)
def _build_smollm2(
    pretrained: bool = True,
    model_path: str | None = None,
    cache_root: str | None = None,
    **overrides: Any,
) -> CompactLM:
    """SmolLM2-135M-Instruct from the manifest's GGUF (``model_path``: another copy of that file).

    ``pretrained=False`` gives ``tiny_language_model`` (the architecture needs the tokenizer the weights carry).
    """
    if not pretrained:
        return tiny_language_model(**overrides)
    found = weights.locate(DEFAULT_LM, model_path)
    return load_gguf(
        found.path,
        name=DEFAULT_LM,
        sha256=found.sha256,
        cache_root=cache_root,
        weight_files={DEFAULT_LM: found.sha256},
        **overrides,
    )


@register("language_model", HF_BUILDER)
def _build_hf(
    pretrained: bool = True,
    model_path: str | None = None,
    cache_root: str | None = None,
    **overrides: Any,
) -> CompactLM:
    """Any Hugging Face causal LM: ``model_path`` is a local folder, a ``.gguf`` file or a hub id (module doc)."""
    if model_path is None:
        raise WeightsError(
            f"language_model {HF_BUILDER!r} needs model_path=<a local model folder, .gguf file or hub id>, "
            f"or the spec '{HF_PREFIX}<repo-or-path>'; nothing is downloaded by default"
        )
    path = Path(model_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path, cache_root=cache_root, **overrides)
    return CompactLM.from_pretrained(path if path.exists() else model_path, pretrained=pretrained, **overrides)

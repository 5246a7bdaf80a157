"""The compact LM on a tiny random Llama (offline): greedy generation, soft-token prefixes, next-token scores,
LoRA, the registry and its spec parser, the dequantised-GGUF cache; then one test on the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from affectlens import weights
from affectlens.errors import RegistryError, WeightsError
from affectlens.registry import create, create_language_model, default_model, list_models
from fusion import lm as lm_module
from fusion.lm import (
    CACHE_MARKER,
    DEFAULT_LM,
    HF_BUILDER,
    PREFIX_PLACEHOLDER,
    PREFIX_SLOT,
    CompactLM,
    LanguageModelSpec,
    LoRALinear,
    apply_lora,
    dequantised_dir,
    ensure_dequantised,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
    parse_language_model_spec,
    tiny_language_model,
)

PROMPT = "How does the speaker feel? Answer with one word."
WITH_SLOT = f"Signals: {PREFIX_PLACEHOLDER}\nHow does the speaker feel?"


@pytest.fixture()
def tiny() -> CompactLM:
    return tiny_language_model()


def full_next_logprobs(lm: CompactLM, ids: list[int], prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: log-softmax of the last position from one plain forward pass, no cache."""
    with torch.no_grad():
        return lm.model(inputs_embeds=lm.embed(ids, prefix)).logits[0, -1].log_softmax(-1)


def all_tokens(lm: CompactLM) -> list[int]:
    return list(range(lm.model.get_output_embeddings().weight.shape[0]))


# -- generation ---------------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_stops_at_max_tokens(tiny: CompactLM) -> None:
    first = tiny.generate(PROMPT, max_new_tokens=7)
    again = tiny.generate(PROMPT, max_new_tokens=7)
    assert first.token_ids == again.token_ids and first.text == again.text
    assert first.num_tokens == 7 and first.finish_reason == "length"
    assert first.text == tiny.tokenizer.decode(list(first.token_ids), skip_special_tokens=True)
    assert 0 < first.time_to_first_token_s <= first.total_s
    assert first.prompt_tokens == len(tiny.chat_ids([{"role": "user", "content": PROMPT}]))
    assert first.to_dict()["num_tokens"] == 7


def test_cached_decoding_matches_full_forward_passes(tiny: CompactLM) -> None:
    result = tiny.generate(PROMPT, max_new_tokens=6)
    ids = tiny.prompt_ids(PROMPT)
    expected = []
    for _ in range(6):
        expected.append(int(full_next_logprobs(tiny, ids).argmax()))
        ids.append(expected[-1])
    assert list(result.token_ids) == expected


def test_generation_stops_at_eos(tiny: CompactLM) -> None:
    free = tiny.generate(PROMPT, max_new_tokens=12).token_ids
    cut = next(i for i in range(1, len(free)) if free[i] not in free[:i])  # first new token after the start
    tiny.eos_token_ids = (free[cut],)
    stopped = tiny.generate(PROMPT, max_new_tokens=12)
    assert stopped.token_ids == free[:cut] and stopped.finish_reason == "stop"
    explicit = tiny.generate(PROMPT, max_new_tokens=12, stop_token_ids=[free[cut]])
    assert explicit.token_ids == free[:cut]


def test_a_string_prompt_is_one_user_message_and_ids_pass_through(tiny: CompactLM) -> None:
    ids = tiny.chat_ids([{"role": "user", "content": PROMPT}])
    assert tiny.prompt_ids(PROMPT) == ids
    assert tiny.prompt_ids(torch.tensor(ids)) == ids
    text = tiny.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert tiny.generate(torch.tensor(ids), max_new_tokens=3).token_ids == tiny.generate(PROMPT, 3).token_ids


# -- soft-token prefixes --------------------------------------------------------------------------------------


def test_placeholder_becomes_one_slot_replaced_by_the_prefix(tiny: CompactLM) -> None:
    ids = tiny.chat_ids([{"role": "user", "content": WITH_SLOT}])
    assert ids.count(PREFIX_SLOT) == 1
    at = ids.index(PREFIX_SLOT)
    prefix = torch.randn(5, tiny.hidden_size)
    embeds = tiny.embed(ids, prefix)
    assert embeds.shape == (1, len(ids) - 1 + 5, tiny.hidden_size)
    table = tiny.model.get_input_embeddings()
    with torch.no_grad():
        assert torch.equal(embeds[0, at : at + 5], prefix)
        assert torch.equal(embeds[0, :at], table(torch.tensor(ids[:at])))
        assert torch.equal(embeds[0, at + 5 :], table(torch.tensor(ids[at + 1 :])))


def test_prefix_changes_the_next_token_distribution(tiny: CompactLM) -> None:
    vocab = all_tokens(tiny)
    plain = tiny.score_next(WITH_SLOT, vocab)
    a = tiny.score_next(
        WITH_SLOT, vocab, prefix_embeds=torch.randn(4, tiny.hidden_size, generator=torch.Generator().manual_seed(1))
    )
    b = tiny.score_next(
        WITH_SLOT, vocab, prefix_embeds=torch.randn(4, tiny.hidden_size, generator=torch.Generator().manual_seed(2))
    )
    assert (plain - a).abs().max() > 1e-3 and (a - b).abs().max() > 1e-3
    # Without a prefix the placeholder is dropped: the prompt is read without it.
    ids = [i for i in tiny.chat_ids([{"role": "user", "content": WITH_SLOT}]) if i != PREFIX_SLOT]
    assert torch.allclose(plain, full_next_logprobs(tiny, ids), atol=1e-5)


@pytest.mark.parametrize("position", [0, 7, -3, "start"])
def test_prefix_position_is_honoured(tiny: CompactLM, position: int | str) -> None:
    """Soft tokens equal to some tokens' embeddings read exactly like those tokens inserted at that position."""
    ids = tiny.prompt_ids(PROMPT)
    inserted = tiny.tokenizer("happy", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        prefix = tiny.model.get_input_embeddings()(torch.tensor(inserted))
    index = 0 if position == "start" else int(position)
    spliced = ids[:index] + inserted + ids[index:]  # list.insert semantics, negative indices included
    vocab = all_tokens(tiny)
    got = tiny.score_next(torch.tensor(ids), vocab, prefix_embeds=prefix, prefix_position=position)  # type: ignore[arg-type]
    assert torch.allclose(got, full_next_logprobs(tiny, spliced), atol=1e-5)
    elsewhere = tiny.score_next(torch.tensor(ids), vocab, prefix_embeds=prefix, prefix_position=index + 3)
    assert (got - elsewhere).abs().max() > 1e-4


def test_prefix_generation_equals_the_spliced_tokens(tiny: CompactLM) -> None:
    ids = tiny.chat_ids([{"role": "user", "content": WITH_SLOT}])
    inserted = tiny.tokenizer(" calm", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        prefix = tiny.model.get_input_embeddings()(torch.tensor(inserted))
    at = ids.index(PREFIX_SLOT)
    spliced = ids[:at] + inserted + ids[at + 1 :]
    with_prefix = tiny.generate(torch.tensor(ids), max_new_tokens=5, prefix_embeds=prefix)
    assert with_prefix.token_ids == tiny.generate(torch.tensor(spliced), max_new_tokens=5).token_ids
    assert with_prefix.prompt_tokens == len(spliced)


def test_batched_prefixes_match_one_at_a_time(tiny: CompactLM) -> None:
    prefixes = torch.randn(3, 4, tiny.hidden_size, generator=torch.Generator().manual_seed(0))
    batch = tiny.generate_batch(WITH_SLOT, max_new_tokens=5, prefix_embeds=prefixes)
    singles = [tiny.generate(WITH_SLOT, max_new_tokens=5, prefix_embeds=p) for p in prefixes]
    assert [r.token_ids for r in batch] == [r.token_ids for r in singles]
    candidates = tiny.label_token_ids(["happiness", "sadness", "anger", "fear"])
    scores = tiny.score_next(WITH_SLOT, candidates, prefix_embeds=prefixes)
    assert scores.shape == (3, 4)
    for row, prefix in enumerate(prefixes):
        assert torch.allclose(scores[row], tiny.score_next(WITH_SLOT, candidates, prefix_embeds=prefix), atol=1e-5)


def test_prefix_misuse_is_refused_clearly(tiny: CompactLM) -> None:
    prefix = torch.randn(2, tiny.hidden_size)
    with pytest.raises(ValueError, match="has no '<affect>'"):
        tiny.generate(PROMPT, 3, prefix_embeds=prefix)
    with pytest.raises(ValueError, match="prefix_embeds must be"):
        tiny.generate(WITH_SLOT, 3, prefix_embeds=torch.randn(2, tiny.hidden_size + 1))
    with pytest.raises(ValueError, match="use prefix_position='placeholder'"):
        tiny.generate(WITH_SLOT, 3, prefix_embeds=prefix, prefix_position="start")
    with pytest.raises(ValueError, match="2 times"):
        tiny.generate(WITH_SLOT + PREFIX_PLACEHOLDER, 3, prefix_embeds=prefix)
    with pytest.raises(ValueError, match="use generate_batch"):
        tiny.generate(WITH_SLOT, 3, prefix_embeds=prefix.expand(2, -1, -1))
    with pytest.raises(ValueError, match="int in"):
        tiny.generate(PROMPT, 3, prefix_embeds=prefix, prefix_position=10_000)
    with pytest.raises(ValueError, match="no prefix_embeds"):
        tiny.embed([1, PREFIX_SLOT, 2])


def test_embed_keeps_gradients_for_the_prefix(tiny: CompactLM) -> None:
    prefix = torch.randn(3, tiny.hidden_size, requires_grad=True)
    logits = tiny.model(inputs_embeds=tiny.embed(tiny.prompt_ids(WITH_SLOT), prefix)).logits
    logits[0, -1].logsumexp(-1).backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0


# -- next-token scores ----------------------------------------------------------------------------------------


def test_score_next_is_normalised_over_the_candidates(tiny: CompactLM) -> None:
    labels = ["happiness", "sadness", "anger", "fear", "surprise", "disgust", "neutral"]
    candidates = tiny.label_token_ids(labels)
    scores = tiny.score_next(PROMPT, candidates)
    assert scores.shape == (7,) and scores.dtype == torch.float32
    assert torch.isclose(scores.exp().sum(), torch.tensor(1.0), atol=1e-5) and bool((scores <= 0).all())
    full = full_next_logprobs(tiny, tiny.prompt_ids(PROMPT))[candidates]
    assert torch.allclose(scores - scores[0], full - full[0], atol=1e-5)  # the same ratios as the full softmax
    with pytest.raises(ValueError, match="distinct"):
        tiny.score_next(PROMPT, [candidates[0], candidates[0]])
    with pytest.raises(ValueError, match="must lie in"):
        tiny.score_next(PROMPT, [10**6])


def test_labels_sharing_a_first_token_are_refused(tiny: CompactLM) -> None:
    with pytest.raises(ValueError, match="start with the same token"):
        tiny.label_token_ids(["fear", "fearful", "anger"])


# -- LoRA -------------------------------------------------------------------------------------------------------


def test_lora_starts_as_identity_and_only_lora_trains(tiny: CompactLM) -> None:
    ids = torch.tensor([tiny.prompt_ids(PROMPT)])
    with torch.no_grad():
        before = tiny.model(input_ids=ids).logits
    layers = apply_lora(tiny.model, r=4, alpha=8)
    assert len(layers) == 2 * tiny.model.config.num_hidden_layers
    assert all(isinstance(layer, LoRALinear) and torch.count_nonzero(layer.lora_B) == 0 for layer in layers)
    with torch.no_grad():
        assert torch.equal(tiny.model(input_ids=ids).logits, before)
    trainable = {n for n, p in tiny.model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith((".lora_A", ".lora_B")) for n in trainable)
    assert {n.rsplit(".", 2)[-2] for n in trainable} == {"q_proj", "v_proj"}
    tiny.model.train()
    tiny.model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is None for n, p in tiny.model.named_parameters() if n not in trainable)
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in tiny.model.named_parameters() if n in trainable
    )
    with pytest.raises(ValueError, match="applied already"):
        apply_lora(tiny.model)
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        apply_lora(tiny_language_model().model, targets=("nope",))


def test_lora_state_round_trips_and_merges(tiny: CompactLM, tmp_path: Path) -> None:
    apply_lora(tiny.model, r=4, alpha=8, targets=("q_proj", "v_proj", "o_proj"))
    with torch.no_grad():
        for layer in tiny.model.modules():
            if isinstance(layer, LoRALinear):
                layer.lora_B.normal_(0, 0.5)
    ids = torch.tensor([tiny.prompt_ids(PROMPT)])
    with torch.no_grad():
        tuned = tiny.model(input_ids=ids).logits
    state = lora_state_dict(tiny.model)
    assert state and all(k.endswith((".lora_A", ".lora_B")) for k in state)
    from safetensors.torch import load_file, save_file

    save_file(state, str(tmp_path / "lora.safetensors"))
    fresh = tiny_language_model()
    with torch.no_grad():
        assert not torch.allclose(fresh.model(input_ids=ids).logits, tuned)
    apply_lora(fresh.model, r=4, alpha=8, targets=("q_proj", "v_proj", "o_proj"))
    load_lora_state_dict(fresh.model, load_file(str(tmp_path / "lora.safetensors")))
    with torch.no_grad():
        assert torch.allclose(fresh.model(input_ids=ids).logits, tuned, atol=1e-6)
    with pytest.raises(ValueError, match="save lora_state_dict"):
        fresh.save_pretrained(tmp_path / "refused")
    assert merge_lora(fresh.model) == 3 * fresh.model.config.num_hidden_layers
    assert not any(isinstance(m, LoRALinear) for m in fresh.model.modules())
    with torch.no_grad():
        assert torch.allclose(fresh.model(input_ids=ids).logits, tuned, atol=1e-5)
    other = tiny_language_model()
    apply_lora(other.model, r=2, alpha=8, targets=("q_proj", "v_proj", "o_proj"))
    with pytest.raises(ValueError, match="does not fit"):
        load_lora_state_dict(other.model, state)


# -- registry and specs ---------------------------------------------------------------------------------------


def test_registry_lists_the_language_models() -> None:
    assert {DEFAULT_LM, HF_BUILDER} <= set(list_models("language_model"))
    assert default_model("language_model") == DEFAULT_LM
    untrained = create_language_model(pretrained=False)
    assert isinstance(untrained, CompactLM) and untrained.hidden_size == 32


def test_unknown_spec_is_a_value_error_listing_the_valid_ones() -> None:
    message = r"unknown language_model 'nope'; registered: hf-causal-lm, smollm2-135m-instruct; or hf:<repo-or-path>"
    with pytest.raises(ValueError, match=message):
        create_language_model("nope")
    with pytest.raises(RegistryError, match=message):
        create("language_model", "nope")
    with pytest.raises(ValueError, match="unknown language_model 'hf:'"):
        parse_language_model_spec("hf:")
    with pytest.raises(WeightsError, match="needs model_path"):
        create_language_model(HF_BUILDER)


def test_spec_parser_accepts_a_saved_folder(tiny: CompactLM, tmp_path: Path) -> None:
    folder = tiny.save_pretrained(tmp_path / "tiny-lm")
    assert parse_language_model_spec(str(folder)) == LanguageModelSpec(HF_BUILDER, str(folder))
    assert parse_language_model_spec(f"hf:{folder}") == LanguageModelSpec(HF_BUILDER, str(folder))
    assert parse_language_model_spec(DEFAULT_LM) == LanguageModelSpec(DEFAULT_LM)
    expected = tiny.generate(PROMPT, max_new_tokens=6).token_ids
    for spec in (str(folder), f"hf:{folder}"):
        loaded = create_language_model(spec)
        assert loaded.name == HF_BUILDER and loaded.source == str(folder)
        assert loaded.generate(PROMPT, max_new_tokens=6).token_ids == expected
    untrained = create_language_model(str(folder), pretrained=False)
    assert untrained.hidden_size == tiny.hidden_size


def test_hub_ids_stay_local_unless_the_user_opts_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AFFECTLENS_ALLOW_HUB", raising=False)
    with pytest.raises(WeightsError, match="AFFECTLENS_ALLOW_HUB=1"):
        create_language_model("hf:affectlens-test/no-such-model")


# -- the dequantised GGUF cache (the conversion itself is stubbed: no GGUF here) ---------------------------------


def test_gguf_is_dequantised_once_then_read_from_the_cache(
    tiny: CompactLM, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"not really a gguf")
    calls: list[Path] = []

    def fake_dequantise(source: Path, into: Path) -> None:
        calls.append(source)
        tiny.save_pretrained(into)

    monkeypatch.setattr(lm_module, "_dequantise_gguf", fake_dequantise)
    sha = weights.sha256_of(gguf)
    folder = ensure_dequantised(gguf, sha, cache_root=tmp_path / "cache")
    assert folder == dequantised_dir(sha, tmp_path / "cache") and len(calls) == 1
    record = json.loads((folder / CACHE_MARKER).read_text())
    assert record["gguf_sha256"] == sha and "model.safetensors" in record["files"]
    loaded = create_language_model(str(gguf), cache_root=str(tmp_path / "cache"))
    assert len(calls) == 1 and loaded.source == str(folder)
    assert loaded.generate(PROMPT, max_new_tokens=4).token_ids == tiny.generate(PROMPT, max_new_tokens=4).token_ids
    (folder / "model.safetensors").write_bytes(b"truncated")  # a damaged cache is rebuilt, not trusted
    ensure_dequantised(gguf, sha, cache_root=tmp_path / "cache")
    assert len(calls) == 2 and not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


# -- the real default (run `affectlens weights fetch` first) ---------------------------------------------------


def require_weight(name: str) -> None:
    """Skip when a manifest weight is not fetched; under CI (CI=true) that is a failure."""
    state, where = weights.status(weights.get_entry(name))
    if state != "ok":
        message = f"weight {name!r} is {state} ({where or 'not fetched'}); run `affectlens weights fetch`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.weights
@pytest.mark.slow
def test_smollm2_generates_english_then_loads_from_the_safetensors_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    require_weight(DEFAULT_LM)
    messages = [{"role": "user", "content": "What colour is the sky on a clear day? Answer in one sentence."}]
    first = create_language_model()  # dequantises the GGUF on the very first run (about 15 s), else reads the cache
    assert first.name == DEFAULT_LM and first.hidden_size == 576
    reply = first.generate(messages, max_new_tokens=20)
    assert reply.num_tokens > 0 and re.search(r"[A-Za-z]{3,}", reply.text) and reply.text.isascii()
    del first

    def no_gguf(*args: object) -> None:
        raise AssertionError("the second load went back to the GGUF file")

    monkeypatch.setattr(lm_module, "_dequantise_gguf", no_gguf)
    second = create_language_model()
    sha = weights.get_entry(DEFAULT_LM).sha256
    assert Path(second.source) == dequantised_dir(sha) and (dequantised_dir(sha) / "model.safetensors").is_file()
    assert second.weight_files == {DEFAULT_LM: sha}
    assert second.generate(messages, max_new_tokens=20).token_ids == reply.token_ids

"""The strategy encoder: its reading of the dialogue, the delta over a tiny random base, and the planner's mix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from affectlens.labels import ESCONV_STRATEGIES
from fusion.strategy import Message, StrategyConfig, StrategyHead, StrategyPlanner, context_features
from fusion.strategy_encoder import (
    StrategyEncoder,
    StrategyEncoderConfig,
    StrategyEncoderDelta,
    StrategyEncoderEnsemble,
    context_text,
    load_strategy_encoder,
    member_files,
    pad,
    saved_members,
    sharing_lower_layers,
)
from perception.text.emotion import base_config_dict, tiny_base

DIALOGUE = [
    Message("usr", "hi"),
    Message("sys", "Hello! How are you?", ("Question",)),
    Message("sys", "I am here for you.", ()),
    Message("usr", "I failed my exam"),
]


def fake_embed(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    vecs = np.array([[t.count(c) for c in "aeiostnr"] for t in texts], np.float32) + 1e-3
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True), np.full((len(texts), 7), 1 / 7, np.float32)


def tiny_encoder(seed: int = 0, layers: int = 1) -> StrategyEncoder:
    base, tokenizer = tiny_base(seed)
    config = StrategyEncoderConfig(base="tiny", base_config=base_config_dict(base), num_trained_layers=layers)
    torch.manual_seed(seed)
    delta = StrategyEncoderDelta.from_base(config, base)
    torch.nn.init.normal_(delta.head.weight, std=1.0)  # a visible distribution, not the near-uniform start
    return StrategyEncoder(base, tokenizer, delta)


def test_context_text_counts_then_newest_first_with_strategy_tags():
    assert context_text(DIALOGUE) == (
        "2 seeker, 2 supporter messages [SEP] seeker: I failed my exam [SEP] supporter (none): I am here for you."
        " [SEP] supporter (question): Hello! How are you? [SEP] seeker: hi"
    )
    assert context_text(DIALOGUE, max_messages=1) == (
        "2 seeker, 2 supporter messages [SEP] seeker: I failed my exam"
    )  # the counts still cover the whole dialogue
    assert context_text([]) == "0 seeker, 0 supporter messages"


def test_pad_right_pads_and_masks():
    x, mask = pad([[5, 6, 7], [8]])
    assert x.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_delta_starts_as_the_base_top_layer_and_only_it_trains():
    base, tokenizer = tiny_base(0)
    top = {k: v.clone() for k, v in base.encoder.layer[-1].state_dict().items()}
    lower = {k: v.clone() for k, v in base.encoder.layer[0].state_dict().items()}
    config = StrategyEncoderConfig(base="tiny", base_config=base_config_dict(base), num_trained_layers=1)
    delta = StrategyEncoderDelta.from_base(config, base)
    assert all(torch.equal(delta.layers[0].state_dict()[k], v) for k, v in top.items())
    model = StrategyEncoder(base, tokenizer, delta).train()
    assert not model.encoder.embeddings.training and model.delta.layers[0].training
    x, mask = pad(model.tokenize([DIALOGUE, DIALOGUE[:1]]))
    loss = torch.log_softmax(model(x, mask), 1)[:, 0].sum()
    loss.backward()
    assert all(p.grad is None for p in model.encoder.embeddings.parameters())
    assert all(p.grad is None for p in model.encoder.encoder.layer[0].parameters())
    assert delta.head.weight.grad is not None and delta.layers[0].attention.self.query.weight.grad is not None
    torch.optim.SGD(delta.parameters(), lr=1.0).step()
    assert all(torch.equal(model.encoder.encoder.layer[0].state_dict()[k], v) for k, v in lower.items())
    assert not torch.equal(delta.layers[0].attention.self.query.weight, top["attention.self.query.weight"])


def test_probabilities_are_distributions_independent_of_batch_order():
    model = tiny_encoder()
    dialogues = [DIALOGUE, DIALOGUE[:1], DIALOGUE[:2]]
    probs = model.probabilities(dialogues)
    assert probs.shape == (3, len(ESCONV_STRATEGIES)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(model.probabilities(dialogues[::-1])[::-1], probs, atol=1e-5)  # padding is masked
    assert np.allclose(model.probabilities([DIALOGUE]), probs[:1], atol=1e-5)
    assert not np.allclose(probs[0], probs[1], atol=1e-3)  # it reads the dialogue


def test_float16_save_round_trip_and_base_mismatch(tmp_path):
    model = tiny_encoder()
    before = model.probabilities([DIALOGUE, DIALOGUE[:1]])
    model.delta.save_pretrained(tmp_path, dtype=torch.float16)
    again = StrategyEncoderDelta.from_pretrained(tmp_path)
    assert again.head.weight.dtype == torch.float32 and again.config == model.config
    base, tokenizer = tiny_base(0)
    assert np.allclose(
        StrategyEncoder(base, tokenizer, again).probabilities([DIALOGUE, DIALOGUE[:1]]), before, atol=2e-3
    )
    other, _ = tiny_base(0)
    other.config.hidden_size = 48
    with pytest.raises(ValueError, match="another base"):
        StrategyEncoder(other, tokenizer, StrategyEncoderDelta.from_pretrained(tmp_path))
    with pytest.raises(ValueError, match="unknown strategy encoder settings"):
        StrategyEncoderConfig.from_dict({"colour": "blue"})


def test_planner_mixes_the_encoder_by_its_weight(tmp_path):
    encoder = tiny_encoder()
    x = context_features([DIALOGUE], fake_embed)
    head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=8, encoder_weight=0.25))
    head.save_pretrained(tmp_path)
    head = StrategyHead.from_pretrained(tmp_path)
    assert head.config.encoder_weight == 0.25
    with pytest.raises(ValueError, match="pass one"):
        StrategyPlanner(head, fake_embed)
    planner = StrategyPlanner(head, fake_embed, encoder=encoder).with_context(DIALOGUE)
    assert planner.encoder is encoder
    expected = 0.75 * head.probabilities(x) + 0.25 * encoder.probabilities([DIALOGUE])
    assert np.allclose(planner.probabilities([DIALOGUE]), expected, atol=1e-6)
    chosen = planner.choose([DIALOGUE])[0]
    assert chosen[0][0] == ESCONV_STRATEGIES[int(expected[0].argmax())]


def tiny_delta(seed: int) -> StrategyEncoderDelta:
    return tiny_encoder(seed).delta


def test_member_files_and_saved_members(tmp_path):
    assert member_files(0) == ("encoder.json", "encoder.safetensors")
    assert member_files(1) == ("encoder-2.json", "encoder-2.safetensors")
    with pytest.raises(ValueError, match=">= 0"):
        member_files(-1)
    assert saved_members(tmp_path) == 0
    tiny_delta(0).save_pretrained(tmp_path)
    tiny_delta(1).save_pretrained(tmp_path, member=1)
    assert saved_members(tmp_path) == 2
    (tmp_path / "encoder-2.safetensors").unlink()  # a member needs both files
    assert saved_members(tmp_path) == 1


def test_ensemble_members_share_the_base_and_average(tmp_path):
    deltas = [tiny_delta(0), tiny_delta(1)]
    alone = []
    for delta in deltas:  # each member on a base of its own, as reference
        base, tokenizer = tiny_base(0)
        alone.append(StrategyEncoder(base, tokenizer, delta).probabilities([DIALOGUE, DIALOGUE[:1]]))
    assert not np.allclose(alone[0], alone[1], atol=1e-3)
    base, tokenizer = tiny_base(0)
    original_top = base.encoder.layer[-1]
    members = [StrategyEncoder(sharing_lower_layers(base), tokenizer, d) for d in deltas]
    ensemble = StrategyEncoderEnsemble(members)
    assert base.encoder.layer[-1] is original_top  # the shared base keeps its own top layer
    assert members[0].encoder.embeddings is members[1].encoder.embeddings is base.embeddings
    assert members[0].encoder.encoder.layer[0] is members[1].encoder.encoder.layer[0]
    assert members[0].encoder.encoder.layer[-1] is deltas[0].layers[-1]
    assert members[1].encoder.encoder.layer[-1] is deltas[1].layers[-1]
    assert ensemble.config == deltas[0].config
    probs = ensemble.probabilities([DIALOGUE, DIALOGUE[:1]])
    assert np.allclose(probs, (alone[0] + alone[1]) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        StrategyEncoderEnsemble([])


def test_load_strategy_encoder_loads_the_members_it_is_asked_for(tmp_path, monkeypatch):
    import fusion.strategy_encoder as module
    from affectlens import weights

    tiny_delta(0).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="mixes 2 strategy encoders but the folder holds 1"):
        load_strategy_encoder(tmp_path, members=2)
    tiny_delta(1).save_pretrained(tmp_path, member=1)
    monkeypatch.setattr(weights, "locate_group", lambda group, path=None: type("G", (), {"path": tmp_path})())
    monkeypatch.setattr(module, "load_base", lambda folder: tiny_base(0))
    single = load_strategy_encoder(tmp_path)
    assert isinstance(single, StrategyEncoder)
    pair = load_strategy_encoder(tmp_path, members=2)
    assert isinstance(pair, StrategyEncoderEnsemble) and len(pair.members) == 2
    expected = (single.probabilities([DIALOGUE]) + pair.members[1].probabilities([DIALOGUE])) / 2
    assert np.allclose(pair.probabilities([DIALOGUE]), expected, atol=1e-5)
    with pytest.raises(ValueError, match=">= 1"):
        load_strategy_encoder(tmp_path, members=0)


def test_planner_mixes_an_ensemble_like_one_encoder():
    base, tokenizer = tiny_base(0)
    ensemble = StrategyEncoderEnsemble(
        [StrategyEncoder(sharing_lower_layers(base), tokenizer, tiny_delta(k)) for k in range(2)]
    )
    x = context_features([DIALOGUE], fake_embed)
    head = StrategyHead(StrategyConfig(input_dim=x.shape[1], hidden=8, encoder_weight=0.5, encoder_members=2))
    planner = StrategyPlanner(head, fake_embed, encoder=ensemble)
    expected = 0.5 * head.probabilities(x) + 0.5 * ensemble.probabilities([DIALOGUE])
    assert np.allclose(planner.probabilities([DIALOGUE]), expected, atol=1e-6)


@pytest.mark.weights
@pytest.mark.slow
def test_shipped_strategy_encoder_reads_a_real_dialogue():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "weights" / "strategy-planner"
    config = StrategyConfig.from_dict(__import__("json").loads((folder / "config.json").read_text()))
    if config.encoder_weight == 0:
        pytest.skip("the shipped planner mixes in no encoder")
    encoder = load_strategy_encoder(folder, members=config.encoder_members)
    assert saved_members(folder) == config.encoder_members  # no stale member ships
    assert_reads_small_talk_as_others(encoder.probabilities)


def assert_reads_small_talk_as_others(probabilities: Callable[[list[list[Message]]], np.ndarray]) -> None:
    """Small talk, as ESConv's supporters answer it (train + valid): after a bare opening (a seeker message of up to
    six words) they ask (Question, 221 of 330) or greet back (Others, 86), so a trained reader's top two are those
    two; after a thank-you-and-goodbye they answer with "Others" (31 of 48), so it gets more than a uniform share."""
    probs = probabilities(
        [
            [Message("usr", "Hi, how are you?")],
            [*DIALOGUE, Message("sys", "What could you do differently next time?", ("Question",)),
             Message("usr", "Thank you so much, this really helped. Bye!")],
        ]
    )  # fmt: skip
    greeting, goodbye = probs
    assert {ESCONV_STRATEGIES[i] for i in np.argsort(greeting)[-2:]} == {"Question", "Others"}
    assert goodbye[ESCONV_STRATEGIES.index("Others")] > 1 / len(ESCONV_STRATEGIES)

"""The reply LoRA path: the reply prompt, ESConv exemplar retrieval, swapping a LoRA in for the reply only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectlens.conversation import LMResponder, ReplyLoRA, load_reply_lora, reply_prompt
from affectlens.errors import WeightsError
from fusion.exemplars import ExemplarBank, default_bank
from fusion.lm import LoRALinear, apply_lora, lora_state_dict, lora_swapped, tiny_language_model
from fusion.strategy import Message
from tests.test_conversation import conversation, words_embed


def _esconv(path, dialogues):
    path.write_text("\n".join(json.dumps({"dialog": d}) for d in dialogues) + "\n")
    return path


DIALOGUES = [
    [
        {"speaker": "usr", "text": "I failed my exam and I feel awful"},
        {"speaker": "sys", "text": "What subject was the exam in, if you don't mind me asking?", "strategy": "Question"},
        {"speaker": "usr", "text": "My boss shouted at me at work today"},
        {"speaker": "sys", "text": "Maybe you could talk to him calmly tomorrow morning.", "strategy": "Providing Suggestions"},
    ],
    [
        {"speaker": "usr", "text": "I failed my driving exam again"},
        {"speaker": "sys", "text": "Could you try booking one more lesson before the next test?", "strategy": "Providing Suggestions"},
        {"speaker": "usr", "text": "ok"},
        {"speaker": "sys", "text": "Too short.", "strategy": "Others"},
    ],
]  # fmt: skip


def test_the_bank_retrieves_the_nearest_reply_of_the_strategy(tmp_path):
    bank = ExemplarBank.from_esconv(_esconv(tmp_path / "train.jsonl", DIALOGUES), words_embed, tmp_path / "cache")
    assert len(bank) == 3  # "Too short." (2 words) is not kept
    found = bank.retrieve("I failed my exam", "Providing Suggestions")
    assert found is not None and found.reply.startswith("Could you try booking")  # "exam" beats "boss"
    assert bank.retrieve("I failed my exam", "Providing Suggestions", exclude_dialogue=1).dialogue == 0
    assert bank.retrieve("I failed my exam", "Question").reply.startswith("What subject")
    assert bank.retrieve("I failed my exam", "Self-disclosure") is None  # none of that strategy
    assert bank.retrieve("I failed my exam", "Question", exclude_dialogue=0) is None
    assert bank.retrieve("   ", "Question") is None
    assert list((tmp_path / "cache").glob("*.npy"))  # embeddings cached by the file's hash
    again = ExemplarBank.from_esconv(
        tmp_path / "train.jsonl", lambda texts: pytest.fail("re-embedded"), tmp_path / "cache"
    )
    np.testing.assert_array_equal(again.vectors, bank.vectors)


def test_default_bank_comes_from_the_environment(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("AFFECTLENS_ESCONV", raising=False)
    assert default_bank() is None
    monkeypatch.setenv("AFFECTLENS_ESCONV", str(tmp_path / "missing.jsonl"))
    assert default_bank() is None and "missing.jsonl" in caplog.text  # logged, replies go on without exemplars


def test_reply_prompt_orders_history_words_exemplar_and_steps():
    history = [Message("usr", "hello"), Message("sys", "Hi, how are you?", ("Question",)), Message("usr", "not good")]
    messages = reply_prompt(
        "I failed my exam.", ["Question", "Reflection of feelings"], feeling="sadness", need="comfort",
        recollection="Last time you mentioned your driving.", history=history,
        exemplar="What subject was it?",
    )  # fmt: skip
    system, user = messages[0]["content"], messages[1]["content"]
    assert "feel sadness and to need comfort." in system and "Last time you mentioned your driving." in system
    assert "hello" not in user  # only the last two messages before the person's words
    positions = [user.index(s) for s in ("You: Hi, how are you?", "Them: not good", '"I failed my exam."',
                                         '"What subject was it?"', "open question", "name the feeling")]  # fmt: skip
    assert positions == sorted(positions)
    assert "Conversation so far" not in reply_prompt("hi", ["Others"])[1]["content"]
    long = reply_prompt("x", ["Others"], history=[Message("sys", "word " * 100)])[1]["content"]
    assert long.count("word") == 40 and "..." in long


def _lora_like(lm, seed: int, r: int = 2) -> dict[str, torch.Tensor]:
    apply_lora(lm.model, r=r, alpha=4.0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        state = {k: torch.randn_like(v) for k, v in lora_state_dict(lm.model).items()}
    return state


def _logits(lm) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits


def test_lora_swapped_on_a_plain_model_adds_and_removes_the_layers():
    lm, donor = tiny_language_model(), tiny_language_model()
    state = _lora_like(donor, seed=1)
    plain = _logits(lm)
    with lora_swapped(lm.model, state, r=2, alpha=4.0):
        inside = _logits(lm)
        assert any(isinstance(m, LoRALinear) for m in lm.model.modules())
    assert not any(isinstance(m, LoRALinear) for m in lm.model.modules())
    torch.testing.assert_close(_logits(lm), plain)
    assert not torch.allclose(inside, plain)
    donor.model.load_state_dict({**donor.model.state_dict(), **state})
    torch.testing.assert_close(inside, _logits(donor))  # the same as a model carrying that LoRA


def test_lora_swapped_restores_the_lora_a_model_carries():
    lm = tiny_language_model()
    own = _lora_like(lm, seed=2)
    lm.model.load_state_dict({**lm.model.state_dict(), **own})
    for m in lm.model.modules():
        if isinstance(m, LoRALinear):
            m.scaling = 0.5  # as the adapter's reasoner may have set it
    before = _logits(lm)
    other = {k: torch.randn_like(v) for k, v in own.items()}
    with lora_swapped(lm.model, other, r=2, alpha=4.0):
        assert not torch.allclose(_logits(lm), before)
        assert {m.scaling for m in lm.model.modules() if isinstance(m, LoRALinear)} == {2.0}
    torch.testing.assert_close(_logits(lm), before)
    assert {m.scaling for m in lm.model.modules() if isinstance(m, LoRALinear)} == {0.5}
    with (
        pytest.raises(ValueError, match="does not fit"),
        lora_swapped(lm.model, {"x.lora_A": torch.ones(1)}, r=2, alpha=4.0),
    ):
        pass
    torch.testing.assert_close(_logits(lm), before)  # a failed swap leaves the model as it was


def test_lm_responder_speaks_through_the_reply_lora_and_the_bank(tmp_path):
    from safetensors.torch import save_file

    chat = conversation()
    turn = chat.send("I failed my exam.")
    lm = tiny_language_model()
    state = _lora_like(tiny_language_model(), seed=3)
    save_file(state, tmp_path / "lora.safetensors")
    decoding = {"repetition_penalty": 1.15, "no_repeat_ngram_size": 3}
    (tmp_path / "config.json").write_text(
        json.dumps({"r": 2, "alpha": 4.0, "targets": ["q_proj", "v_proj"], "decoding": decoding})
    )
    lora = load_reply_lora(tmp_path)
    assert isinstance(lora, ReplyLoRA) and lora.r == 2 and lora.targets == ("q_proj", "v_proj")
    bank = ExemplarBank.from_esconv(_esconv(tmp_path / "train.jsonl", DIALOGUES), words_embed, tmp_path / "cache")
    plain = LMResponder(lm, max_new_tokens=6)
    tuned = LMResponder(lm, max_new_tokens=6, lora=lora, bank=bank)
    assert tuned.name.endswith("+reply-lora") and not plain.name.endswith("+reply-lora")
    assert tuned.decoding == decoding and plain.decoding == {"repetition_penalty": 1.3, "no_repeat_ngram_size": 4}
    user = tuned.prompt(turn.tree, ["Providing Suggestions"], chat.dialogue, None)[-1]["content"]
    assert "Could you try booking one more lesson" in user
    assert (
        "A supporter once" not in plain.prompt(turn.tree, ["Providing Suggestions"], chat.dialogue, None)[-1]["content"]
    )
    ids = torch.tensor([lm.chat_ids(tuned.prompt(turn.tree, ["Question"], chat.dialogue, None))])
    with lora_swapped(lm.model, lora.state, r=2, alpha=4.0), torch.inference_mode():
        expected = lm.model(input_ids=ids).logits
    seen: list[bool] = []
    generate = lm.model.generate

    def watching(*args, **kwargs):  # what the model carries while the reply is generated, and how it decodes
        seen.append(any(isinstance(m, LoRALinear) for m in lm.model.modules()))
        seen.append(kwargs["repetition_penalty"])
        return generate(*args, **kwargs)

    lm.model.generate = watching
    assert isinstance(tuned.reply(turn.tree, ["Question"], chat.dialogue, None), str)
    assert isinstance(plain.reply(turn.tree, ["Question"], chat.dialogue, None), str)
    assert seen == [True, 1.15, False, 1.3]
    assert not any(isinstance(m, LoRALinear) for m in lm.model.modules())  # the LM is left as it came
    with torch.inference_mode():
        assert not torch.allclose(lm.model(input_ids=ids).logits, expected)  # the LoRA changed what it reads


def test_build_lm_responder_uses_the_reply_lora_only_on_its_own_base_model(tmp_path, monkeypatch, caplog):
    import affectlens.conversation as conversation_module

    lora = ReplyLoRA({}, 2, 4.0, ("q_proj", "v_proj"), {"base_weights": {"smollm2-135m-instruct": "abc"}})
    monkeypatch.setattr(conversation_module, "load_reply_lora", lambda directory=None: lora)
    monkeypatch.delenv("AFFECTLENS_ESCONV", raising=False)
    same = tiny_language_model(weight_files={"smollm2-135m-instruct": "abc"})
    assert conversation_module.build_lm_responder(same).lora is lora
    other = conversation_module.build_lm_responder(tiny_language_model())  # another model: base replies
    assert other.lora is None and "trained on" in caplog.text
    assert conversation_module.build_lm_responder(same, reply_lora=False).lora is None
    monkeypatch.setattr(conversation_module, "load_reply_lora", load_reply_lora)  # the real loader, a named folder
    with pytest.raises(WeightsError, match="not a reply LoRA folder"):
        conversation_module.build_lm_responder(same, reply_lora=tmp_path / "nowhere")
    from safetensors.torch import save_file

    folder = tmp_path / "mine"
    folder.mkdir()
    save_file(_lora_like(tiny_language_model(), seed=3), folder / "lora.safetensors")
    config = {"r": 2, "alpha": 4.0, "targets": ["q_proj", "v_proj"], "base_weights": {"smollm2-135m-instruct": "abc"}}
    (folder / "config.json").write_text(json.dumps(config))
    mine = conversation_module.build_lm_responder(same, reply_lora=folder).lora
    assert mine is not None and mine.r == 2 and mine.config == config
    (folder / "lora.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="not a reply LoRA folder"):
        conversation_module.build_lm_responder(same, reply_lora=folder)
    bank_file = _esconv(tmp_path / "train.jsonl", DIALOGUES)
    monkeypatch.setattr(
        "fusion.exemplars.ExemplarBank.from_esconv",
        classmethod(lambda cls, path, embed=None, cache=None: ExemplarBank([], np.zeros((0, 4)), embed)),
    )
    bank = conversation_module.build_lm_responder(same, exemplars=bank_file, embed=words_embed).bank
    assert isinstance(bank, ExemplarBank) and bank.embed is words_embed  # the memory's embedder, not a second one


@pytest.mark.weights
def test_the_shipped_reply_lora_fits_the_shipped_lm_and_replies():
    from affectlens.conversation import build_lm_responder

    responder = build_lm_responder()
    assert responder.lora is not None and responder.name == "lm:smollm2-135m-instruct+reply-lora"
    assert responder.decoding == responder.lora.config["decoding"]
    chat = conversation(responder=responder)
    turn = chat.send("I failed my exam and my parents are angry with me.")
    assert turn.reply_source in ("lm:smollm2-135m-instruct+reply-lora", "template") and turn.reply
    text = responder.reply(turn.tree, ["Question"], chat.dialogue, None)
    assert text and text[-1] in ".!?"  # whole sentences from the tuned model
    assert not any(isinstance(m, LoRALinear) for m in responder.lm.model.modules())  # swapped back out

"""Late fusion, the fusion adapter and the adapter+LM reasoner, with tiny models built here (no weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affectlens.labels import CANONICAL_EMOTIONS
from affectlens.types import (
    AnalysisResult,
    EmotionPrediction,
    FaceObservation,
    FaceQuality,
    FrameResult,
    TextEmotion,
    Utterance,
)
from fusion.adapter import (
    FACE_DIM,
    SUMMARY_DIM,
    FusionAdapter,
    FusionAdapterConfig,
    ModalityTokens,
    TokenBatch,
    build_projector,
    label_token_ids,
    tokens_from_results,
)
from fusion.late import LateFusion, ModalityEvidence, collect_evidence
from fusion.lm import lora_state_dict, tiny_language_model
from fusion.reasoner import AdapterReasoner, build_batch, lora_off, prompt_pieces

N = len(CANONICAL_EMOTIONS)


def onehot(label: str, sharpness: float = 0.8) -> np.ndarray:
    p = np.full(N, (1 - sharpness) / (N - 1))
    p[CANONICAL_EMOTIONS.index(label)] = sharpness
    return p


def prediction(label: str, sharpness: float = 0.8) -> EmotionPrediction:
    return EmotionPrediction.from_vector(onehot(label, sharpness), "test", 0.1, 0.2)


def face(label: str, quality: float) -> FaceObservation:
    return FaceObservation(0, (0, 0, 10, 10), 0.9, prediction(label), FaceQuality(quality, 100, 50, 0.9))


def result(kind: str = "image", faces: tuple[FaceObservation, ...] = (), utterances: tuple[Utterance, ...] = ()):
    frames = tuple(FrameResult(i, float(i), (f,)) for i, f in enumerate(faces))
    return AnalysisResult("x", kind, 10, 10, None, None, frames, {}, utterances=utterances)  # type: ignore[arg-type]


# -- late fusion -----------------------------------------------------------------------------------------------


def test_late_fusion_weighs_reliable_modalities_more():
    fusion = LateFusion()
    sharp_face = ModalityEvidence("face", onehot("happiness"), signal=1.0)
    few_words = ModalityEvidence("text", onehot("sadness"), signal=1.0)
    assert fusion([sharp_face, few_words]).label == "happiness"  # a clear face outweighs one word
    poor_face = ModalityEvidence("face", onehot("happiness"), signal=0.05)
    many_words = ModalityEvidence("text", onehot("sadness"), signal=40.0)
    fused = fusion([poor_face, many_words])
    assert fused.label == "sadness"
    assert fused.weights["text"] > fused.weights["face"]
    assert abs(sum(fused.probabilities.values()) - 1) < 1e-6


def test_late_fusion_abstains_and_refuses_nothing():
    fusion = LateFusion()
    flat = ModalityEvidence("face", np.full(N, 1 / N), signal=1.0)
    assert fusion([flat]).uncertain and fusion([flat]).state == "uncertain"
    with pytest.raises(ValueError, match="at least one"):
        fusion([])
    with pytest.raises(ValueError, match="probabilities"):
        ModalityEvidence("face", np.array([np.nan] * N), 1.0)


def test_late_fusion_fit_learns_which_modality_to_trust(tmp_path):
    rng = np.random.default_rng(0)
    samples, labels = [], []
    for _ in range(300):  # the voice is always right, the face is a coin toss
        y = int(rng.integers(N))
        wrong = int(rng.integers(N))
        face_label = CANONICAL_EMOTIONS[y if rng.random() < 0.3 else wrong]
        samples.append([
            ModalityEvidence("face", onehot(face_label), 1.0),
            ModalityEvidence("voice", onehot(CANONICAL_EMOTIONS[y], 0.5), 2.0),
        ])  # fmt: skip
        labels.append(y)
    fusion = LateFusion()
    fusion.fit(samples, labels)
    assert fusion.config.alpha["voice"] > fusion.config.alpha["face"]
    fusion.save_pretrained(tmp_path)
    again = LateFusion.from_pretrained(tmp_path)
    assert again.config.alpha == pytest.approx(fusion.config.alpha)
    (tmp_path / "late_fusion.json").write_text('{"bogus": 1}')
    with pytest.raises(ValueError, match="bogus"):
        LateFusion.from_pretrained(tmp_path)


def test_collect_evidence_from_results():
    text = TextEmotion(prediction("sadness"), {})
    spoken = Utterance(0, 1.0, 3.0, "I lost it", speech_emotion=prediction("anger"), text_emotion=text)
    results = [result("image", (face("happiness", 0.9),)), result("audio", utterances=(spoken,))]
    evidence = {e.modality: e for e in collect_evidence(results)}
    assert set(evidence) == {"face", "voice", "text"}
    assert evidence["face"].label == "happiness" and evidence["voice"].label == "anger"
    assert evidence["voice"].signal == pytest.approx(2.0) and evidence["text"].signal == 3
    assert evidence["voice"].span == (1.0, 3.0)
    assert collect_evidence(result("image")) == []


# -- adapter ---------------------------------------------------------------------------------------------------


def tiny_config(**changes) -> FusionAdapterConfig:
    return FusionAdapterConfig(
        voice_raw_dim=6, text_raw_dim=5, d_model=16, layers=1, heads=2, queries=3, lm_hidden=32, lora_r=2, **changes
    )


def tokens(*modalities: str, n: int = 1) -> ModalityTokens:
    dims = tiny_config().input_dims
    rng = np.random.default_rng(len(modalities) + n)
    return ModalityTokens({m: rng.normal(size=(n, dims[m])).astype(np.float32) for m in modalities})


def test_projector_specs_are_parsed_in_one_place():
    assert isinstance(build_projector("linear", 4, 8), torch.nn.Linear)
    mlp = build_projector("mlp2x_gelu", 4, 8)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    with pytest.raises(ValueError, match="linear, mlp2x_gelu"):
        build_projector("qformer", 4, 8)


def test_adapter_tolerates_missing_modalities_and_padding():
    torch.manual_seed(0)
    adapter = FusionAdapter(tiny_config()).eval()
    batch = TokenBatch.collate(
        [tokens("face"), tokens("voice", "text", n=3), tokens("face", "voice", "text")], adapter.config
    )
    prefix, aux = adapter(batch)
    assert prefix.shape == (3, 3, 32) and aux.shape == (3, N)
    assert torch.isfinite(prefix).all()
    # padding is invisible: a sample alone and in a batch with longer ones gives the same prefix
    alone, _ = adapter(TokenBatch.collate([tokens("face")], adapter.config))
    assert torch.allclose(alone[0], prefix[0], atol=1e-5)
    # every modality changes the result
    without_text, _ = adapter(TokenBatch.collate([tokens("face", "voice", "text")], adapter.config))
    assert not torch.allclose(without_text[0], adapter(TokenBatch.collate([tokens("face")], adapter.config))[0][0])


def test_adapter_round_trip_with_lora(tmp_path):
    adapter = FusionAdapter(tiny_config(projector="linear"))
    lora = {"model.layers.0.self_attn.q_proj.lora_A": torch.randn(2, 32)}
    adapter.save_pretrained(tmp_path, lora)
    again, lora_again = FusionAdapter.from_pretrained(tmp_path)
    assert again.config == adapter.config
    for (k, v), (k2, v2) in zip(adapter.state_dict().items(), again.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    assert torch.equal(
        lora_again["model.layers.0.self_attn.q_proj.lora_A"], lora["model.layers.0.self_attn.q_proj.lora_A"]
    )


def test_tokens_from_results_windows_and_caps():
    config = tiny_config(max_tokens_per_modality=2)
    faces = tuple(face("happiness", 0.9) for _ in range(5))
    video = result("video", faces)  # frames at 0..4 s: five 1-second windows, capped to two tokens
    text = TextEmotion(prediction("sadness"), {}, embedding=np.ones(5, np.float32))
    spoken = Utterance(0, 0.0, 1.0, "so sad", speech_emotion=prediction("fear"), text_emotion=text)
    t = tokens_from_results([video, result("audio", utterances=(spoken,))], config)
    assert t.present() == ["face", "voice", "text"]
    assert t.rows["face"].shape == (2, FACE_DIM)
    voice = t.rows["voice"][0]
    assert voice[-1] == 0.0 and not voice[SUMMARY_DIM:-1].any()  # no raw speech features: flag off, zeros
    assert t.rows["text"][0][-1] == 1.0 and t.rows["text"][0][SUMMARY_DIM:-1].tolist() == [1.0] * 5
    image = tokens_from_results(result("image", faces[:2]), config)
    assert image.rows["face"].shape == (1, FACE_DIM)  # one image: one window


# -- adapter + LM ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reasoner() -> AdapterReasoner:
    torch.manual_seed(0)
    lm = tiny_language_model()
    vocab = sorted(lm.tokenizer.get_vocab().values())
    adapter = FusionAdapter(tiny_config(label_token_ids=vocab[20:27]))
    from fusion.lm import apply_lora

    apply_lora(lm.model, r=2, targets=adapter.config.lora_targets)
    return AdapterReasoner(adapter, lm)


def test_build_batch_masks_everything_but_the_target(reasoner):
    tok = reasoner.lm.tokenizer
    pieces = [prompt_pieces(tok, "caption"), prompt_pieces(tok, "reply", text="I failed")]
    prefix = torch.zeros(2, 3, 32)
    targets = [[5, 6], [7]]
    inputs, mask, labels, last = build_batch(reasoner.embeddings, prefix, pieces, targets, reasoner.pad_id)
    lengths = [len(p.before) + 3 + len(p.after) + len(t) for p, t in zip(pieces, targets, strict=True)]
    assert inputs.shape == (2, max(lengths), 32)
    assert mask.sum(1).tolist() == lengths and [n - 1 for n in lengths] == last
    assert labels[0][labels[0] != -100].tolist() == [5, 6] and labels[1][labels[1] != -100].tolist() == [7]


def test_reasoner_labels_fuse_and_generate(reasoner):
    samples = [tokens("face"), tokens("voice", "text"), tokens("face", "voice", "text")]
    probs = reasoner.label_probabilities(samples)
    assert probs.shape == (3, N) and np.allclose(probs.sum(1), 1)
    assert not np.allclose(probs[0], probs[1])  # the prefix carries the signals into the LM
    text = TextEmotion(prediction("sadness"), {}, embedding=np.zeros(5, np.float32))
    fused = reasoner.fuse([result("text", utterances=(Utterance(0, 0, 0, "oh no", text_emotion=text),))])
    assert fused.method == reasoner.name and set(fused.weights) == {"text"}
    assert isinstance(reasoner.generate("reason", samples[0], max_new_tokens=5), str)
    with pytest.raises(ValueError, match="nothing to fuse"):
        reasoner.fuse([result("image")])


def test_lora_off_runs_the_base_model_and_restores(reasoner):
    model = reasoner.lm.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.fill_(0.5)
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        tuned = model(ids).logits
        with lora_off(model):
            base = model(ids).logits
        again = model(ids).logits
    assert not torch.allclose(tuned, base) and torch.allclose(tuned, again)
    assert lora_state_dict(model)  # the LoRA matrices are still there


def test_label_token_ids_of_a_tokenizer(reasoner):
    try:
        ids = label_token_ids(reasoner.lm.tokenizer)
    except ValueError as exc:  # a 300-token BPE may well merge labels: then it must say so
        assert "share" in str(exc) or "merges" in str(exc)
    else:
        assert len(set(ids)) == N


def test_one_training_step_lowers_the_loss(reasoner):
    adapter, lm = reasoner.adapter, reasoner.lm
    tok = lm.tokenizer
    sample = tokens("face", "text")
    pieces = [prompt_pieces(tok, "reason")]
    target = [tok("Emotion: sadness.", add_special_tokens=False)["input_ids"]]
    params = list(adapter.parameters()) + [p for p in lm.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(5):
        prefix, _ = adapter(TokenBatch.collate([sample], adapter.config))
        inputs, mask, labels, _ = build_batch(lm.model.get_input_embeddings(), prefix, pieces, target, reasoner.pad_id)
        loss = lm.model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(not p.requires_grad for n, p in lm.model.named_parameters() if "lora_" not in n)


# -- shipped weights -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_reasoner():
    from fusion.reasoner import build_default_reasoner

    return build_default_reasoner()


@pytest.mark.weights
@pytest.mark.slow
def test_shipped_late_fusion_is_fitted():
    from fusion.late import load_late_fusion

    fusion = load_late_fusion()
    assert fusion.config.fitted_on != "untrained prior"
    assert set(fusion.config.alpha) == {"face", "voice", "text"} and min(fusion.config.alpha.values()) > 0


@pytest.mark.weights
@pytest.mark.slow
def test_shipped_adapter_labels_and_writes_real_words(shipped_reasoner):
    from affectlens import Analyzer
    from fusion.tree import build_tree

    analyzer = Analyzer(fuser=shipped_reasoner, writer=shipped_reasoner)
    happy = analyzer.analyze(text="This is the best day of my life, I am so happy and grateful for all of you!")
    sad = analyzer.analyze(text="My grandmother died last night and I miss her so much. I can't stop crying.")
    assert happy.tree.emotion.value["label"] == "happiness"
    assert sad.tree.emotion.value["label"] == "sadness"
    assert happy.tree.models["fuser"] == shipped_reasoner.name == sad.tree.models["writer"]
    for node in (sad.tree.cause, sad.tree.appraisal, sad.tree.emotion):
        assert node.text_source == f"lm:{shipped_reasoner.name}" and len(node.text.split()) >= 3
    assert sad.tree.reply.text_source == "template"  # the reply follows the planned strategies
    tokens = tokens_from_results(sad, shipped_reasoner.adapter.config)
    reply = shipped_reasoner.generate("reply", tokens, max_new_tokens=24, text="My grandmother died last night.")
    assert len(reply.split()) >= 3
    # the LM's texts never change a structured value
    plain = build_tree(sad, fuser=shipped_reasoner)
    assert plain.emotion.value == sad.tree.emotion.value and plain.strategy.value == sad.tree.strategy.value


@pytest.mark.weights
@pytest.mark.data
@pytest.mark.slow
def test_shipped_adapter_on_held_back_assembled_samples(shipped_reasoner):
    """The shipped adapter + LM and late fusion on 300 held-back assembled samples: within a few points of the
    figures in its training report (3,000 samples there)."""
    import json
    import sys
    from pathlib import Path

    from tests.conftest import require_shared

    require_shared("fer2013.npz")
    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "scripts"))
    import fusion_data as fd

    if not fd.pools_path(fd.default_cache(), shipped_reasoner.adapter.config).is_file():
        pytest.skip("the encoded samples are not cached here: run scripts/train_fusion_adapter.py --eval-only once")

    report = json.loads((repo / "weights" / "fusion-adapter" / "training_report.json").read_text())
    pools = fd.build_pools(fd.default_cache(), fd.default_feature_cache(), shipped_reasoner.adapter.config)
    samples = fd.assemble(pools["test"], 300, 12, 0.3)
    y = np.array([s.label for s in samples])
    accuracy = float((shipped_reasoner.label_probabilities([s.tokens for s in samples]).argmax(1) == y).mean())
    reported = report["comparison"]["adapter+LM"]["all"]["accuracy"]
    assert accuracy > reported - 0.06, (accuracy, reported)

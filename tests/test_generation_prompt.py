"""Emotion-directed prompts (``generation.prompting``) and text-to-image (``generation.text_to_image``).

The backend runs a tiny random Stable Diffusion pipeline and the scorer a tiny random CLIP, both built here from
configs (diffusers ``get_dummy_components`` style) with an in-memory byte-level tokenizer: nothing downloads.
"""

from __future__ import annotations

import functools
import json
import math
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from affectlens.errors import AffectLensError
from affectlens.labels import CANONICAL_EMOTIONS
from generation.prompting import (
    CONCEPTS,
    MAX_CAUSE_CHARS,
    MAX_PROMPT_TOKENS,
    MAX_PROMPT_WORDS,
    NEGATIVE_SLOTS,
    OPPOSITES,
    SLOTS,
    EmotionPrompt,
    estimate_tokens,
    rewrite_prompt,
    sanitise_text,
)

# ---- the prompt rewriter -----------------------------------------------------------------------------------------


def _phrases(prompt: EmotionPrompt) -> set[str]:
    return {phrase for phrases in prompt.concepts.values() for phrase in phrases}


def _within_budget(text: str) -> bool:
    return len(text.split()) <= MAX_PROMPT_WORDS and estimate_tokens(text) <= MAX_PROMPT_TOKENS


@pytest.mark.parametrize("emotion", CANONICAL_EMOTIONS)
def test_every_emotion_gives_a_prompt_and_a_negative(emotion: str) -> None:
    result = rewrite_prompt(emotion, "a lighthouse on a cliff")
    assert result.prompt.startswith("a lighthouse on a cliff, ")
    assert result.negative_prompt and _within_budget(result.prompt) and _within_budget(result.negative_prompt)
    assert result.emotion == emotion and result.emotions == ((emotion, 1.0),)
    assert tuple(result.concepts) == SLOTS
    for slot, phrases in result.concepts.items():
        assert all(phrase in CONCEPTS[emotion][slot] and phrase in result.prompt for phrase in phrases)
    opposite = OPPOSITES[emotion]
    assert result.negative_from == (opposite,)
    assert all(CONCEPTS[opposite][slot][0] in result.negative_prompt for slot in NEGATIVE_SLOTS)
    assert "watermark" in result.negative_prompt
    assert emotion not in result.prompt  # emotion is not semantics: concepts, not the emotion's name
    json.dumps(result.to_dict())


def test_aliases_are_the_canonical_emotion() -> None:
    assert rewrite_prompt("sad", seed=4) == rewrite_prompt("sadness", seed=4)
    assert rewrite_prompt(" Joy ").emotion == "happiness"


def test_sadness_and_happiness_look_different() -> None:
    for seed in range(5):
        sad, happy = rewrite_prompt("sadness", seed=seed), rewrite_prompt("happiness", seed=seed)
        assert not _phrases(sad) & _phrases(happy)
        assert sad.prompt != happy.prompt


def test_negative_of_happiness_holds_sadness_concepts() -> None:
    happy = rewrite_prompt("happiness", seed=2)
    for slot in NEGATIVE_SLOTS:
        assert CONCEPTS["sadness"][slot][0] in happy.negative_prompt
    assert not any(phrase in happy.negative_prompt for phrase in _phrases(happy))
    sad = rewrite_prompt("sadness")
    assert all(CONCEPTS["happiness"][slot][0] in sad.negative_prompt for slot in NEGATIVE_SLOTS)


def test_seed_picks_options_deterministically() -> None:
    assert rewrite_prompt("fear", "a forest", seed=7) == rewrite_prompt("fear", "a forest", seed=7)
    prompts = {rewrite_prompt("fear", "a forest", seed=seed).prompt for seed in range(10)}
    assert len(prompts) >= 5
    with pytest.raises(AffectLensError, match="seed"):
        rewrite_prompt("fear", seed="1")  # type: ignore[arg-type]


def test_mixed_distribution_blends_the_top_two() -> None:
    mixed = rewrite_prompt({"sad": 0.5, "angry": 0.3, "fear": 0.1, "contempt": 0.1}, "a harbour", seed=1)
    assert mixed.emotions == (("sadness", 0.625), ("anger", 0.375))
    for slot in ("mood", "palette", "texture", "symbols"):
        first, second = mixed.concepts[slot]
        assert first in CONCEPTS["sadness"][slot] and second in CONCEPTS["anger"][slot]
    assert mixed.concepts["light"][0] in CONCEPTS["sadness"]["light"]
    assert mixed.negative_from == ("happiness", "neutral")
    assert any("contempt" in note for note in mixed.notes) and any("blended" in note for note in mixed.notes)
    assert _within_budget(mixed.prompt)

    # a weak second emotion is left out; a bittersweet mix keeps only the generic negatives
    assert rewrite_prompt({"sadness": 0.9, "anger": 0.1}).emotions == (("sadness", 1.0),)
    bittersweet = rewrite_prompt({"happiness": 0.5, "sadness": 0.5})
    assert bittersweet.negative_from == ()
    assert not any(CONCEPTS[e][s][0] in bittersweet.negative_prompt for e in ("happiness", "sadness") for s in SLOTS)


def test_intensity_and_valence_arousal() -> None:
    low = rewrite_prompt("anger", intensity=0.1)
    assert low.concepts["mood"][0].startswith("subtle ") and "symbols" not in low.concepts
    high = rewrite_prompt("anger", intensity=0.9)
    assert high.concepts["mood"][0].startswith("intense ") and len(high.concepts["symbols"]) == 2
    assert rewrite_prompt("anger", valence=-0.6, arousal=0.8).intensity == pytest.approx(1.0)
    assert rewrite_prompt("sadness", valence=-0.3, arousal=-0.4).intensity == pytest.approx(0.5)
    for bad in ({"intensity": 1.5}, {"valence": -2.0}, {"arousal": 3.0}):
        with pytest.raises(AffectLensError, match="must be in"):
            rewrite_prompt("anger", **bad)


def test_cause_is_sanitised_and_capped() -> None:
    cause = (
        'He said "you\'re fired"\x00\x1b[31m (boss:1.5) <lora:evil> [a|b] {x}\n\t' + "and the rain kept falling " * 20
    )
    result = rewrite_prompt("sadness", "an office", cause=cause, intensity=0.5)
    assert result.cause_used and result.motif
    motif = result.motif
    assert f"a motif of {motif}" in result.prompt
    assert not any(unicodedata.category(ch)[0] == "C" for ch in motif)
    assert not set(motif) & set("\"'`()<>[]{}|:\n\t\\")
    assert motif.startswith("He said youre fired 31m boss 1.5 lora evil a b x and the rain")
    assert len(motif) <= MAX_CAUSE_CHARS and _within_budget(result.prompt)

    capped = sanitise_text("word " * 100)
    assert len(capped) <= MAX_CAUSE_CHARS and capped.endswith("word") and "  " not in capped
    assert sanitise_text("“quoted” «text» \u200b\u202eok!!") == "quoted text ok"
    assert rewrite_prompt("sadness", cause="\x00\x01 '\"").cause_used is False


@pytest.mark.parametrize(
    "cause",
    [
        "I want to kill myself",
        "my friend has been cutting herself",
        "she attempted suicide last year",
        "He took his own life",
        "thinking about self-harm again",
    ],
)
def test_self_harm_cause_is_never_rendered(cause: str) -> None:
    result = rewrite_prompt("sadness", "a bedroom", cause=cause)
    assert not result.cause_used and result.motif is None
    assert "motif" not in result.prompt
    assert any("cause dropped" in note for note in result.notes)
    assert result.prompt == rewrite_prompt("sadness", "a bedroom").prompt


def test_unsafe_subject_falls_back_to_the_default() -> None:
    result = rewrite_prompt("sadness", "a person who wants to kill himself")
    assert result.subject == "a quiet scene" and result.prompt.startswith("a quiet scene, ")
    assert any("subject dropped" in note for note in result.notes)


def test_benign_cause_is_used() -> None:
    result = rewrite_prompt("sadness", cause="She lost her job after the factory closed.")
    assert result.cause_used and result.motif == "She lost her job after the factory closed"


@pytest.mark.parametrize("bad", ["elated", {"elated": 1.0}, 3])
def test_unknown_emotion_names_the_allowed_ones(bad: object) -> None:
    with pytest.raises(AffectLensError) as info:
        rewrite_prompt(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad if not isinstance(bad, dict) else "elated") in message
    assert all(emotion in message for emotion in CANONICAL_EMOTIONS)


@pytest.mark.parametrize(
    ("bad", "match"),
    [("contempt", "no visual concepts"), ({}, "non-empty"), ({"sad": -1.0}, ">= 0"), ({"sad": math.nan}, ">= 0"),
     ({"sad": 0.0}, "sum to zero"), ({"sad": "x"}, "number")],
)  # fmt: skip
def test_bad_emotion_inputs_raise(bad: object, match: str) -> None:
    with pytest.raises(AffectLensError, match=match):
        rewrite_prompt(bad)  # type: ignore[arg-type]


# ---- tiny offline parts -------------------------------------------------------------------------------------------


def _tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer with no merges (every byte is a token): 514 ids, built in memory."""
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_config(vocab_size: int) -> dict:
    return dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab_size,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77,
    )  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny models run fastest on one thread, and the machine may be busy; restore the setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline (64x64 images), saved like a real one."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = _tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(len(tokenizer))))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-sd")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(sd_folder: Path):
    from generation.text_to_image import TextToImageBackend

    return TextToImageBackend(sd_folder, device="cpu")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP model and its processor (32x32 images), saved like a real one."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tokenizer = _tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=_text_config(len(tokenizer)),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


class _FakePipeline:
    """A stand-in text-to-image pipeline that records its calls; ``name_or_path`` decides turbo defaults."""

    def __init__(self, name_or_path: str) -> None:
        self.name_or_path = name_or_path
        self.calls: list[dict] = []

    def __call__(self, prompt, negative_prompt=None, num_inference_steps=50, guidance_scale=7.5, width=None,
                 height=None, generator=None, output_type="pil"):  # fmt: skip
        self.calls.append(dict(prompt=prompt, negative_prompt=negative_prompt, steps=num_inference_steps,
                               guidance=guidance_scale, width=width, height=height))  # fmt: skip
        shade = int(generator.initial_seed() % 256)
        return SimpleNamespace(images=[Image.new("RGB", (width, height), (shade, 0, 0))])


# ---- the backend --------------------------------------------------------------------------------------------------


def test_backend_draws_the_rewritten_prompt(backend, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import StableDiffusionPipeline

    seen: list[dict] = []
    original = StableDiffusionPipeline.__call__

    @functools.wraps(original)
    def spy(self, *args, **kwargs):
        seen.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", spy)
    result = backend.generate("sadness", seed=0, steps=2, width=64, height=64)

    assert isinstance(result.image, Image.Image) and result.image.size == (64, 64) and result.image.mode == "RGB"
    expected = rewrite_prompt("sadness", seed=0)
    assert result.prompt == expected
    assert len(seen) == 1
    assert seen[0]["prompt"] == expected.prompt and seen[0]["negative_prompt"] == expected.negative_prompt
    assert seen[0]["num_inference_steps"] == 2 and seen[0]["guidance_scale"] == 7.5
    assert result.negative_used and result.seconds > 0 and result.scores is None
    assert not backend.is_turbo and backend.native_size == 64
    json.dumps(result.to_dict())


def test_backend_is_deterministic_per_seed(backend) -> None:
    first = backend.generate("sadness", seed=0, steps=2, width=64, height=64)
    again = backend.generate("sadness", seed=0, steps=2, width=64, height=64)
    other = backend.generate("sadness", seed=1, steps=2, width=64, height=64)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(first.image), np.asarray(other.image))


@pytest.mark.parametrize(
    ("setting", "match"),
    [({"width": 63}, "multiple of 8"), ({"height": 4096}, "multiple of 8"), ({"width": 32}, "multiple of 8"),
     ({"steps": 0}, "steps"), ({"steps": 151}, "steps"), ({"guidance": -1.0}, "guidance"),
     ({"guidance": 31.0}, "guidance"), ({"seed": -1}, "seed")],
)  # fmt: skip
def test_backend_rejects_bad_settings(setting: dict, match: str) -> None:
    from generation.text_to_image import TextToImageBackend

    fake = _FakePipeline("my-model")
    with pytest.raises(AffectLensError, match=match):
        TextToImageBackend(fake).generate("anger", **setting)
    with pytest.raises(AffectLensError, match="elated"):
        TextToImageBackend(fake).generate("elated")
    assert fake.calls == []


def test_backend_rejects_missing_or_bad_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from generation.text_to_image import TextToImageBackend

    monkeypatch.delenv("AFFECTLENS_ALLOW_HUB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AffectLensError, match="no such folder"):
        TextToImageBackend(tmp_path / "absent")
    with pytest.raises(AffectLensError, match=r"no model_index\.json"):
        TextToImageBackend(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(AffectLensError, match="is a file"):
        TextToImageBackend(tmp_path / "weights.bin")
    with pytest.raises(AffectLensError, match="AFFECTLENS_ALLOW_HUB=1"):
        TextToImageBackend("nobody-here/no-such-model")
    with pytest.raises(AffectLensError, match="pipeline object"):
        TextToImageBackend(42)


def test_turbo_pipelines_get_turbo_defaults() -> None:
    from generation.text_to_image import FALLBACK_SIZE, STANDARD_DEFAULTS, TURBO_DEFAULTS, TextToImageBackend

    turbo = _FakePipeline("stabilityai/sd-turbo")
    backend = TextToImageBackend(turbo)
    result = backend.generate({"happy": 0.7, "surprised": 0.3}, "a birthday party", seed=5)
    assert backend.is_turbo and backend.defaults == TURBO_DEFAULTS
    assert turbo.calls[0]["steps"] == 1 and turbo.calls[0]["guidance"] == 0.0
    assert result.image.size == (FALLBACK_SIZE, FALLBACK_SIZE) and not result.negative_used
    assert (
        turbo.calls[0]["prompt"]
        == rewrite_prompt({"happiness": 0.7, "surprise": 0.3}, "a birthday party", seed=5).prompt
    )
    assert TextToImageBackend(_FakePipeline("runwayml/stable-diffusion-v1-5")).defaults == STANDARD_DEFAULTS


# ---- the scorer ---------------------------------------------------------------------------------------------------


def test_scorer_gives_seven_probabilities(clip_folder: Path, tmp_path: Path) -> None:
    from generation.text_to_image import EmotionScorer, TextToImageBackend

    scorer = EmotionScorer.from_pretrained(clip_folder)
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)),
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
    ]
    scores = scorer.score_batch(images)
    for row in scores:
        assert tuple(row) == CANONICAL_EMOTIONS
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-5) and all(0.0 <= p <= 1.0 for p in row.values())
    assert scorer.score(images[0]) == pytest.approx(scores[0])

    result = TextToImageBackend(_FakePipeline("x"), scorer=scorer).generate("fear", width=64, height=64)
    assert result.scores is not None and sum(result.scores.values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(AffectLensError, match="no such folder"):
        EmotionScorer.from_pretrained(tmp_path / "absent")


# ---- the public generator and the command line over a text-to-image folder ---------------------------------------


def test_image_generator_and_cli_over_a_text_to_image_folder(
    sd_folder: Path, clip_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from affectlens.cli import main
    from generation.create import ImageGenerator

    generator = ImageGenerator(sd_folder, clip=clip_folder)
    assert generator.kind == "text-to-image"
    made = generator.generate({"sadness": 0.7, "anger": 0.3}, subject="a lighthouse", seed=3, steps=2, size=64)
    assert made.image.size == (64, 64) and made.subject == "a lighthouse"
    assert made.prompt is not None and made.prompt["prompt"].startswith("a lighthouse")
    assert made.scores is not None and sum(made.scores.values()) == pytest.approx(1.0, abs=1e-4)
    out = tmp_path / "lighthouse.png"
    argv = ["generate", "image", "--emotion", "sadness=0.7,anger=0.3", "--subject", "a lighthouse", "--seed", "3",
            "--steps", "2", "--size", "64", "--model", str(sd_folder), "-o", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output"] == str(out) and printed["emotion"] == {"sadness": 0.7, "anger": 0.3}
    assert Image.open(out).size == (64, 64)
    assert main([*argv[:-3], "-o", str(tmp_path / "x.gif")]) == 1
    assert "must end in" in capsys.readouterr().err
    assert main([*argv[:2], "--emotion", "sadness=lots", "-o", str(out)]) == 1
    assert "not name=weight" in capsys.readouterr().err


# ---- the open_clip scorer -----------------------------------------------------------------------------------------


def _tiny_open_clip_scorer():
    import torch

    from generation.text_to_image import OpenClipEmotionScorer

    class TinyOpenClip(torch.nn.Module):
        """open_clip's scoring surface (``encode_text``, ``encode_image``, ``logit_scale``), tiny and random."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.token = torch.nn.Embedding(256, 16)
            self.pixel = torch.nn.Linear(3 * 8 * 8, 16)
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(100.0)))

        def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
            return self.token(ids).mean(dim=1)

        def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.pixel(pixels.flatten(1))

    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.resize((8, 8)), dtype=np.float32) / 255).permute(2, 0, 1)

    def tokenizer(phrases: list[str]) -> torch.Tensor:
        return torch.tensor([list(p.encode()[:32].ljust(32, b"\0")) for p in phrases])

    return OpenClipEmotionScorer(TinyOpenClip(), preprocess, tokenizer)


def test_open_clip_scorer_shares_the_clip_scoring(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    from affectlens.cli import main
    from generation.create import ImageGenerator
    from generation.text_to_image import EMOTION_TEXTS

    scorer = _tiny_open_clip_scorer()
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    scores = scorer.score(image)
    assert tuple(scores) == CANONICAL_EMOTIONS and sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert scorer.score(image) == scores
    with torch.no_grad():  # the zero-shot math written out: unit image vs unit mean of unit phrase embeddings
        unit = functools.partial(torch.nn.functional.normalize, dim=-1)
        texts = torch.stack(
            [unit(scorer.model.encode_text(scorer.tokenizer(list(EMOTION_TEXTS[e])))).mean(0) for e in scores]
        )
        feats = unit(scorer.model.encode_image(scorer.processor(image)[None]))
        expected = (100.0 * feats @ unit(texts).T).softmax(-1)[0]
    assert list(scores.values()) == pytest.approx(expected.tolist(), abs=1e-5)

    made = ImageGenerator(_FakePipeline("x"), clip=scorer).generate("fear", size=64)
    assert made.scores is not None and sum(made.scores.values()) == pytest.approx(1.0, abs=1e-5)
    argv = ["generate", "image", "--emotion", "fear", "--model", "x", "-o", str(tmp_path / "x.png")]
    assert main([*argv, "--clip-open", "ViT-B-32"]) == 1
    assert "MODEL_NAME=CHECKPOINT_FILE" in capsys.readouterr().err


def test_open_clip_weights_must_be_a_local_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from generation.text_to_image import OpenClipEmotionScorer

    monkeypatch.delenv("AFFECTLENS_ALLOW_HUB", raising=False)
    absent = tmp_path / "absent.safetensors"
    with pytest.raises(AffectLensError, match=r"absent\.safetensors: no such checkpoint file"):
        OpenClipEmotionScorer.from_checkpoint("ViT-B-32", absent)
    with pytest.raises(AffectLensError, match="no such checkpoint file"):
        OpenClipEmotionScorer.from_checkpoint("ViT-B-32", tmp_path)  # a folder
    for name, tag in (("ViT-B-32", "openai"), ("hf-hub:laion/CLIP-ViT-B-32", "x.safetensors")):
        with pytest.raises(AffectLensError, match="AFFECTLENS_ALLOW_HUB=1"):
            OpenClipEmotionScorer.from_checkpoint(name, tag)


def test_open_clip_scorer_from_a_tiny_checkpoint(tmp_path: Path) -> None:
    from generation.text_to_image import OpenClipEmotionScorer, _import_open_clip

    try:
        open_clip = _import_open_clip()
    except AffectLensError as exc:
        pytest.skip(str(exc))
    from safetensors.torch import save_file

    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "affectlens-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "affectlens-tiny-clip.json")
    model = open_clip.create_model("affectlens-tiny-clip", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "tiny.safetensors")

    scorer = OpenClipEmotionScorer.from_checkpoint("affectlens-tiny-clip", tmp_path / "tiny.safetensors")
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8))
    scores = scorer.score(image)
    assert tuple(scores) == CANONICAL_EMOTIONS and sum(scores.values()) == pytest.approx(1.0, abs=1e-5)
    assert scorer.score(image) == scores

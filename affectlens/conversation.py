"""Multi-turn empathic conversation: each turn's words (and optional image/audio/video) -> tree -> strategies ->
affect state -> recollection -> reply.

``Conversation.send(text, image=..., audio=..., video=...)`` runs one turn:

1. the ``Analyzer`` reads the moment (``analyze(..., tree=False)``);
2. the affective tree is built with the planner reading the dialogue so far (``StrategyPlanner.with_context``);
   the tree's structured nodes, its safety check and its template reply come from ``fusion.tree.build_tree``;
3. the user's affect state (``AffectTracker``) takes the tree's fused emotion;
4. the emotional memory recalls an earlier turn on the same topic (``EmotionalMemory.recall``, by content and mood);
5. the ``Responder`` writes the reply: by default the planner's template for the planned strategies
   (``TemplateResponder``), or the compact LM from the tree, the strategies and the recollection (``LMResponder``); a reply the safety module replaced (crisis, attachment) is kept as it is, and any reply that fails
   ``check_reply`` (human claims, manipulation, judging the person) or the responder's own checks (the LM's: a
   reply that leaves the conversation's topic, ``fusion.reply_fit``) falls back to the tree's template; the turn
   records why (``Turn.refused``).

A ``Turn`` keeps all of it; ``Conversation.to_dict()`` is the whole dialogue as JSON. Parts are injected (tests use
tiny ones); defaults load the shipped models on first use.

``Conversation.talking_head(portrait, path)`` has a portrait speak a turn's reply (``generation.talking_head``) with
the emotion its tree asks for, or with a calm face when the safety module wrote the reply.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    import numpy as np

    from affectlens.analyzer import Analyzer
    from affectlens.tree import AffectTree
    from fusion.affect_state import AffectState, AffectTracker
    from fusion.memory import EmotionalMemory
    from fusion.reply_fit import ReplyFitModel
    from fusion.safety import RiskDetector
    from fusion.strategy import Message, StrategyPlanner
    from generation.speech import EngineChoice
    from generation.talking_head import TalkingHead

logger = logging.getLogger(__name__)

#: Longest reply the responder generates, in tokens.
REPLY_TOKENS: Final = 48
#: The face a talking head shows while speaking a reply the safety module wrote (a crisis, a boundary, a follow-up
#: after a crisis): calm and quietly concerned, never the person's own emotion acted out.
CALM_EMOTION: Final[dict[str, float]] = {"neutral": 0.6, "sadness": 0.4}
CALM_INTENSITY: Final = 0.3
#: The face when the tree names no emotion to show.
NEUTRAL_INTENSITY: Final = 0.3


class Responder(Protocol):
    """Writes the supporter's reply for a turn."""

    name: str

    def reply(
        self, tree: AffectTree, strategies: Sequence[str], dialogue: Sequence[Message], recollection: str | None
    ) -> str: ...


#: What each strategy asks of the reply, as an instruction to the LM.
INSTRUCTIONS: Final[dict[str, str]] = {
    "Question": "ask one gentle, open question about what happened or how they feel",
    "Restatement or Paraphrasing": "briefly say back, in your own words, what they told you",
    "Reflection of feelings": "name the feeling you hear in their words",
    "Self-disclosure": "say briefly that many people feel this way (you are an AI: never claim experiences of your own)",
    "Affirmation and Reassurance": "tell them their feeling makes sense and affirm their effort",
    "Providing Suggestions": "offer one small, concrete next step, without pressure",
    "Information": "give one useful, factual piece of information",
    "Others": "answer warmly and simply",
}


class TemplateResponder:
    """The planner's own reply: the tree's template for the planned strategies. The default: on ESConv test the
    compact LM with the reply LoRA shares a few more words with the references (BLEU-2 0.056 vs 0.053, ROUGE-L 0.169
    vs 0.159 with its reply checks, ``affectlens eval dialogue``), but read blind, turn by turn, its replies misread
    the person, leave the conversation or speak as a person far more often (29 of 51 ESConv valid turns against the
    templates' 9, mostly questions the templates cannot answer; ``docs/dialogue-replies.md``)."""

    name = "template"

    def reply(
        self, tree: AffectTree, strategies: Sequence[str], dialogue: Sequence[Message], recollection: str | None
    ) -> str:
        return tree.reply.text or ""


#: Decoding of the base LM's replies (without the reply LoRA): a strong repetition penalty keeps it from looping.
BASE_DECODING: Final[dict[str, Any]] = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 4}
#: Words of one earlier message the reply prompt keeps (the start of it).
HISTORY_WORDS: Final = 40
#: Earlier messages (before the person's last) the reply prompt shows.
HISTORY_MESSAGES: Final = 2


def _clip_words(text: str, words: int) -> str:
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def reply_prompt(
    said: str,
    strategies: Sequence[str],
    *,
    feeling: str = "unsure",
    need: str | None = None,
    recollection: str | None = None,
    history: Sequence[Message] = (),
    exemplar: str | None = None,
) -> list[dict[str, str]]:
    """The chat prompt the compact LM replies to (``LMResponder``, and ``scripts/train_reply_lora.py`` trains on
    exactly this): what the tree found (``feeling``, ``need``), an earlier turn to mention, the last
    ``HISTORY_MESSAGES`` messages before the person's last, their words, a retrieved ESConv ``exemplar`` of the first
    strategy, and the strategies as ordered instructions."""
    steps = "; then ".join(INSTRUCTIONS.get(s, INSTRUCTIONS["Others"]) for s in strategies) or INSTRUCTIONS["Others"]
    context = f"They seem to feel {feeling}" + (f" and to need {need}." if need else ".")
    if recollection:
        context += f" Earlier in this conversation: {recollection}"
    system = (
        "You are a warm, honest emotional-support assistant (an AI). You reply in one or two short sentences, "
        "speaking directly to the person. " + context
    )
    lines = [
        f"{'Them' if m.speaker == 'usr' else 'You'}: {_clip_words(m.text, HISTORY_WORDS)}"
        for m in list(history)[-HISTORY_MESSAGES:]
        if m.text
    ]
    user = ("Conversation so far:\n" + "\n".join(lines) + "\n" if lines else "") + f'The person says: "{said}"\n'
    if exemplar:
        user += f'A supporter once answered a similar message like this: "{exemplar}"\n'
    return [{"role": "system", "content": system}, {"role": "user", "content": user + f"Reply to them: {steps}."}]


class LMResponder:
    """The compact LM writes the reply from ``reply_prompt``: the person's words and the two messages before them,
    what the tree found (emotion, need), an earlier turn to mention, the planned strategies as instructions in order
    and, with an ``ExemplarBank``, a real ESConv supporter reply of the first strategy to a similar message.

    ``lora``: the reply LoRA (``weights/reply-lora/``, ``load_reply_lora``) trained on ESConv train with exactly
    these prompts; it is applied to the LM for the reply only (swapped with any LoRA the LM carries, e.g. the fusion
    adapter's, and swapped back after). Without it the base instruction model replies (any LoRA switched off).
    Decoding is greedy with a repetition penalty (``decoding``); the text is cut to at most two sentences with no
    repeats. ``topic``: a ``fusion.reply_fit.ReplyFitModel`` whose ``problems`` refuse a reply that does not answer
    the conversation (the conversation then uses the tree's template)."""

    def __init__(
        self,
        lm: Any,
        max_new_tokens: int = REPLY_TOKENS,
        lora: ReplyLoRA | None = None,
        bank: Any | None = None,
        topic: ReplyFitModel | None = None,
    ) -> None:
        self.lm = lm
        self.max_new_tokens = max_new_tokens
        self.lora = lora
        self.bank = bank
        self.topic = topic
        self.name = f"lm:{lm.name}" + ("+reply-lora" if lora is not None else "")

    def problems(self, dialogue: Sequence[Message], text: str) -> list[str]:
        """What is wrong with ``text`` as the reply to ``dialogue`` beyond ``check_reply``: with a topic model, a
        reply that does not answer the conversation."""
        found = self.topic.problem(dialogue, text) if self.topic is not None else None
        return [found] if found else []

    def exemplar(self, said: str, strategies: Sequence[str]) -> str | None:
        """The bank's reply of the first strategy to the message nearest ``said``, or None without a bank."""
        if self.bank is None or not strategies or not said.strip():
            return None
        found = self.bank.retrieve(said, strategies[0])
        return None if found is None else str(found.reply)

    def prompt(
        self, tree: AffectTree, strategies: Sequence[str], dialogue: Sequence[Message], recollection: str | None
    ) -> list[dict[str, str]]:
        emotion = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
        need = tree.appraisal.value.get("need") if isinstance(tree.appraisal.value, dict) else None
        last = max((i for i, m in enumerate(dialogue) if m.speaker == "usr"), default=-1)
        said = dialogue[last].text if last >= 0 else ""
        return reply_prompt(
            said, strategies, feeling=str(emotion.get("state") or "unsure"), need=need, recollection=recollection,
            history=dialogue[:last] if last >= 0 else (), exemplar=self.exemplar(said, strategies),
        )  # fmt: skip

    def reply(
        self, tree: AffectTree, strategies: Sequence[str], dialogue: Sequence[Message], recollection: str | None
    ) -> str:
        import torch

        from fusion.lm import lora_swapped
        from fusion.reasoner import lora_off

        ids = torch.tensor([self.lm.chat_ids(self.prompt(tree, strategies, dialogue, recollection))])
        scope = (
            lora_off(self.lm.model)
            if self.lora is None
            else lora_swapped(
                self.lm.model, self.lora.state, r=self.lora.r, alpha=self.lora.alpha, targets=self.lora.targets
            )
        )
        with scope, torch.inference_mode():
            out = self.lm.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens, do_sample=False,
                repetition_penalty=self.decoding["repetition_penalty"],
                no_repeat_ngram_size=self.decoding["no_repeat_ngram_size"], eos_token_id=list(self.lm.eos_token_ids),
                pad_token_id=self.lm.eos_token_ids[0],
            )  # fmt: skip
        text = str(self.lm.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
        return tidy_reply(text)

    @property
    def decoding(self) -> dict[str, Any]:
        """Greedy decoding's repetition penalty and no-repeat n-gram size: the reply LoRA's (chosen on ESConv valid
        by its training script), else ``BASE_DECODING`` for the base model."""
        chosen = self.lora.config.get("decoding", {}) if self.lora is not None else {}
        return {**BASE_DECODING, **chosen}


@dataclass(frozen=True)
class ReplyLoRA:
    """The reply LoRA: its matrices (keyed as ``lora_state_dict`` keys them), rank, alpha and target layers."""

    state: dict[str, Any]
    r: int
    alpha: float
    targets: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)


#: Manifest group of the shipped reply LoRA.
REPLY_LORA_WEIGHTS: Final = "reply-lora"


def load_reply_lora(directory: str | os.PathLike[str] | None = None) -> ReplyLoRA:
    """The reply LoRA in ``directory`` (``config.json`` + ``lora.safetensors``), by default the shipped one."""
    import json

    from safetensors.torch import load_file

    if directory is None:
        from affectlens.weights import locate_group

        directory = locate_group(REPLY_LORA_WEIGHTS).path
    folder = Path(directory)
    config = json.loads((folder / "config.json").read_text())
    return ReplyLoRA(
        load_file(folder / "lora.safetensors"), int(config["r"]), float(config["alpha"]), tuple(config["targets"]),
        config,
    )  # fmt: skip


def build_lm_responder(
    lm: Any | None = None,
    *,
    exemplars: str | os.PathLike[str] | None = None,
    reply_lora: bool | str | os.PathLike[str] = True,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    topic_check: bool = True,
) -> LMResponder:
    """The compact LM responder as shipped: the default LM (or ``lm``), the shipped reply LoRA (unless
    ``reply_lora`` is False, its files are missing or ``lm`` is not the model it was trained on: then the base
    model replies; a folder instead of True: the reply LoRA there, e.g. one ``scripts/train_reply_lora.py --out``
    wrote, and a missing or unreadable one is an error) and an exemplar bank from the
    ESConv file ``exemplars`` (or ``AFFECTLENS_ESCONV``; none by default: ESConv is not redistributed), embedded by
    ``embed`` (pass the sentence embedder the conversation's memory already loaded; default: a new one). With
    ``topic_check`` the shipped ``fusion.reply_fit`` model refuses replies that do not answer the conversation (a
    missing model is logged, and the patterns alone check the replies)."""
    from affectlens.errors import WeightsError
    from fusion.exemplars import ExemplarBank, default_bank

    if lm is None:
        from affectlens.registry import create_language_model

        lm = create_language_model()
    lora = None
    if reply_lora is True:
        try:
            lora = load_reply_lora()
        except (WeightsError, OSError) as exc:
            logger.warning("no reply LoRA (%s): the base LM replies", exc)
    elif reply_lora is not False:  # a folder the caller named: it must be there
        from safetensors import SafetensorError

        try:
            lora = load_reply_lora(reply_lora)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise WeightsError(
                f"{reply_lora}: not a reply LoRA folder (config.json + lora.safetensors): {exc}"
            ) from exc
    trained_on = lora.config.get("base_weights") if lora is not None else None
    if trained_on and dict(getattr(lm, "weight_files", {}) or {}) != trained_on:
        logger.warning("the reply LoRA was trained on %s, not on %s: the base LM replies", trained_on, lm.name)
        lora = None
    bank = ExemplarBank.from_esconv(exemplars, embed) if exemplars else default_bank(embed)
    topic = None
    if topic_check:
        from fusion.reply_fit import shipped_model

        topic = shipped_model()
    return LMResponder(lm, lora=lora, bank=bank, topic=topic)


def tidy_reply(text: str, max_sentences: int = 2) -> str:
    """The first line, at most ``max_sentences`` sentences, no sentence twice, no speaker labels, no cut-off end."""
    import re

    text = text.strip().split("\n")[0]
    text = re.sub(r"^(you|assistant|supporter)\s*:\s*", "", text, flags=re.IGNORECASE)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]
    kept: list[str] = []
    for sentence in sentences:
        if sentence.lower() not in {k.lower() for k in kept} and sentence[-1] in ".!?":
            kept.append(sentence)
        if len(kept) == max_sentences:
            break
    return " ".join(kept)


@dataclass(frozen=True)
class Turn:
    """One turn: what the user sent, the tree, the planned strategies (with why), the affect state after it, the
    recollection used, the reply and where it came from, the seconds it took, and why the responder's own reply was
    refused when it was (``refused``: the problems found; the reply is then the tree's template)."""

    index: int
    text: str | None
    tree: AffectTree
    strategies: tuple[tuple[str, str, float], ...]
    affect: AffectState | None
    trajectory: str
    recollection: str | None
    reply: str
    reply_source: str
    seconds: float
    sources: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "sources": list(self.sources),
            "strategies": [{"strategy": s, "why": w, "probability": round(p, 4)} for s, w, p in self.strategies],
            "affect": None if self.affect is None else self.affect.to_dict(),
            "trajectory": self.trajectory,
            "recollection": self.recollection,
            "reply": self.reply,
            "reply_source": self.reply_source,
            "refused": list(self.refused),
            "seconds": round(self.seconds, 3),
            "tree": self.tree.to_dict(),
        }


@dataclass
class Conversation:
    """A multi-turn conversation with one user (see the module docstring).

    >>> chat = Conversation()
    >>> turn = chat.send("I failed my driving test again.")
    >>> turn.reply, turn.strategies, turn.tree.render()
    """

    analyzer: Analyzer | None = None
    planner: StrategyPlanner | None = None
    responder: Responder | None = None
    tracker: AffectTracker | None = None
    memory: EmotionalMemory | None = None
    safety: RiskDetector | None = None  # one per conversation: it remembers its readings of the earlier turns
    animator: TalkingHead | None = None  # for ``talking_head``: built on first use
    user_id: str = "user"
    turns: list[Turn] = field(default_factory=list)
    dialogue: list[Message] = field(default_factory=list)
    _recalled: set[int] = field(default_factory=set, repr=False)

    def _parts(self) -> None:
        """Build the default parts that were not injected (loads the shipped models once)."""
        if self.analyzer is None:
            from affectlens.analyzer import Analyzer

            self.analyzer = Analyzer()
        if self.planner is None:
            from fusion.strategy import load_strategy_planner

            self.planner = load_strategy_planner(text_model=self.analyzer.text)
        if self.responder is None:
            self.responder = TemplateResponder()
        if self.tracker is None:
            from fusion.affect_state import AffectTracker

            self.tracker = AffectTracker()
        if self.memory is None:
            from fusion.memory import EmotionalMemory, shared_sentence_embedder

            self.memory = EmotionalMemory(shared_sentence_embedder())
        if self.safety is None:
            from fusion.safety import RiskDetector

            self.safety = RiskDetector()

    def send(self, text: str | None = None, *, image: Any = None, audio: Any = None, video: Any = None) -> Turn:
        """One user turn: ``text`` and/or an image (path or array), an audio clip, a video. Returns the ``Turn``."""
        from fusion.affect_state import describe_trajectory, observation_from
        from fusion.memory import mention
        from fusion.strategy import Message
        from fusion.tree import build_tree

        self._parts()
        assert self.analyzer and self.planner and self.responder and self.tracker and self.memory
        start = time.perf_counter()
        sources = [s for s in (image, audio, video) if s is not None]
        if not sources and (text is None or not text.strip()):
            raise ValueError("a turn needs text, an image, an audio clip or a video")
        typed = text if text is not None and text.strip() else None
        result = self.analyzer.analyze(
            (sources if len(sources) > 1 else sources[0]) if sources else None, text=typed, tree=False
        )
        words = " ".join(u.text for u in result.utterances if u.text) or (typed or "")
        index = len(self.turns)
        self.dialogue.append(Message("usr", words or "(no words)"))
        planner = self.planner.with_context(self.dialogue)
        earlier = [m.text for m in self.dialogue[:-1] if m.speaker == "usr"]  # the safety check reads them too
        tree = build_tree(result, fuser=self.analyzer.fuser, planner=planner, safety=self.safety, history=earlier)
        emotion = tree.emotion.value if isinstance(tree.emotion.value, dict) else {}
        affect = None
        if emotion.get("label") is not None:
            probs = emotion.get("probabilities") or {}
            affect = self.tracker.update(
                self.user_id,
                observation_from(
                    emotion.get("valence") or 0.0, emotion.get("arousal") or 0.0, probs, tree.emotion.confidence,
                    index, uncertain=bool(emotion.get("uncertain")),
                ),
            )  # fmt: skip
        states = self.tracker.trajectory(self.user_id)
        trajectory = describe_trajectory(states)
        if affect is not None:  # the tree shows the trajectory too
            tree = replace(
                tree,
                affect={
                    "state": affect.to_dict(),
                    "recent": [s.to_dict() for s in states[-5:]],
                    "trajectory": trajectory,
                },
            )
        recollection = None
        if words:
            mood = (affect.valence, affect.arousal) if affect else None
            found = self.memory.recall(self.user_id, words, mood=mood, k=3, turn=index)
            fresh = [r for r in found if r.item.turn not in self._recalled]  # each earlier turn is brought up once
            if fresh:
                self._recalled.add(fresh[0].item.turn)
                recollection = mention(fresh[0], now_valence=float(emotion.get("valence") or 0.0))
        planned = tree.strategy.value.get("strategies", []) if isinstance(tree.strategy.value, dict) else []
        plan = tuple((str(s["strategy"]), str(s["why"]), float(s["confidence"])) for s in planned)
        names = [s for s, _, _ in plan]
        reply, source, refused = self._reply(tree, names, recollection)
        if words:
            self.memory.add(
                self.user_id, index, words, str(emotion.get("state") or emotion.get("label") or "neutral"),
                float(emotion.get("valence") or 0.0), float(emotion.get("arousal") or 0.0),
            )  # fmt: skip
        self.dialogue.append(Message("sys", reply, tuple(names)))
        turn = Turn(
            index, typed, tree, plan, affect, trajectory, recollection, reply, source, time.perf_counter() - start,
            tuple(str(s) if not hasattr(s, "shape") else "<array>" for s in sources), tuple(refused),
        )  # fmt: skip
        self.turns.append(turn)
        return turn

    def _reply(self, tree: AffectTree, strategies: list[str], recollection: str | None) -> tuple[str, str, list[str]]:
        """(reply, its source, why the responder's reply was refused): the responder's reply, unless the safety
        module replaced the reply or the responder's reply fails the checks (then the tree's template)."""
        assert self.responder is not None
        template = tree.reply.text or ""
        safety = getattr(tree, "safety", None)
        if isinstance(safety, dict) and safety.get("reply_overridden"):
            return template, "safety", []
        try:
            text = self.responder.reply(tree, strategies, self.dialogue, recollection).strip()
        except Exception as exc:  # a failing LM must not lose the turn
            logger.warning("responder %s failed: %s", self.responder.name, exc, exc_info=True)
            return template, "template", []
        problems = _reply_problems(text)
        checks = getattr(self.responder, "problems", None)
        if text and not problems and callable(checks):  # the responder's own checks (the LM's topic check)
            problems = list(checks(self.dialogue, text))
        if not text or problems:
            logger.info("responder reply refused (%s); template kept", problems or "empty")
            text, source = template, "template"
        else:
            source = self.responder.name
            concern = isinstance(safety, dict) and safety.get("level") == "concern"
            if concern and text != template and isinstance(safety, dict):  # the template has the check-in already
                from fusion.safety import RiskAssessment, check_in

                text = f"{text} {check_in(RiskAssessment.from_dict(safety))}"
        if recollection and recollection not in text:  # the memory is used in the reply
            text = f"{recollection} {text}"
        return text, source, problems

    def talking_head(
        self,
        portrait: str | os.PathLike[str] | np.ndarray,
        path: str | os.PathLike[str],
        turn: int | Turn | None = None,
        engine: EngineChoice | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Have ``portrait`` (an image path, or RGB uint8 HxWx3) speak the reply of ``turn`` (an index, negative
        from the end, or a ``Turn``; default the last) into the H.264 + AAC MP4 ``path``.

        The face shows the supporter's empathic display of the turn's tree
        (``generation.talking_head.tree_performance_inputs``: shared joy, compassion for sadness, calm concern for
        fear, anger or disgust; gentler than the feeling it answers), except on a reply the safety module wrote (a
        crisis, a boundary, a follow-up after a crisis): then ``CALM_EMOTION`` at ``CALM_INTENSITY``. ``engine``:
        the speech engine (None: the talking head's own, ``"auto"`` when built here). The talking head is built on
        first use and kept as ``animator``.

        Returns the video's ``to_dict()`` with ``output``, ``turn``, ``reply``, ``emotion_source`` (``"tree"``,
        ``"safety"`` or ``"neutral"``), ``why`` and the render's ``timing``.

        Raises:
            AffectLensError: no such turn, an unreadable portrait, no usable face, an empty reply, no speech engine.
        """
        from affectlens.errors import AffectLensError
        from generation.talking_head import build_talking_head
        from perception.media import load_image

        chosen = self._turn(turn)
        image = load_image(portrait)
        emotion, intensity, source, why = _performance_inputs(chosen)
        if self.animator is None:
            self.animator = build_talking_head(engine=engine or "auto")
        head = self.animator
        if engine is not None and engine != head.engine:  # same models, another voice
            head = head.with_engine(engine)
        try:
            prepared = head.prepare(image)
        except AffectLensError as exc:
            name = "the portrait" if hasattr(portrait, "shape") else str(portrait)
            raise AffectLensError(f"{name}: {exc}") from exc
        video = head.perform(prepared, chosen.reply, emotion, intensity, seed=seed)
        timing = video.write(Path(path))
        logger.info("turn %d's reply spoken (%s): %s", chosen.index, source, why)
        return {
            "output": str(path),
            "turn": chosen.index,
            "reply": chosen.reply,
            "emotion_source": source,
            "why": why,
            **video.to_dict(),
            "timing": {k: round(float(v), 3) for k, v in timing.items()},
        }

    def _turn(self, turn: int | Turn | None) -> Turn:
        """The turn asked for: a ``Turn``, an index into ``turns`` (negative from the end), or None for the last."""
        from affectlens.errors import AffectLensError

        if isinstance(turn, Turn):
            return turn
        if not self.turns:
            raise AffectLensError("the conversation has no turns yet: nothing to speak")
        index = -1 if turn is None else int(turn)
        if not -len(self.turns) <= index < len(self.turns):
            raise AffectLensError(f"no turn {index}: the conversation has {len(self.turns)} turn(s)")
        return self.turns[index]

    def to_dict(self) -> dict[str, Any]:
        states = self.tracker.trajectory(self.user_id) if self.tracker else []
        return {
            "user_id": self.user_id,
            "turns": [t.to_dict() for t in self.turns],
            "affect_trajectory": [s.to_dict() for s in states],
        }


def safety_reply_reason(turn: Turn) -> str | None:
    """Why ``turn``'s reply is the safety module's (a crisis, a boundary, a follow-up after a crisis), or None."""
    safety = turn.tree.safety if isinstance(turn.tree.safety, dict) else {}
    level = str(safety.get("level") or "none")
    if turn.reply_source == "safety" or safety.get("reply_overridden") or level == "crisis":
        why = str(safety.get("why") or "").strip()
        return f"the safety module wrote this reply (risk level {level})" + (f": {why}" if why else "")
    return None


def _performance_inputs(turn: Turn) -> tuple[dict[str, float], float, str, str]:
    """What the talking head shows for ``turn``'s reply: (mixture, intensity, source, why)."""
    from affectlens.errors import AffectLensError
    from generation.talking_head import tree_performance_inputs

    calm = " + ".join(f"{name} {weight:.0%}" for name, weight in CALM_EMOTION.items())
    reason = safety_reply_reason(turn)
    if reason is not None:
        why = f"{reason}; the face stays calm ({calm} at intensity {CALM_INTENSITY:.2f}), not the tree's emotion"
        return dict(CALM_EMOTION), CALM_INTENSITY, "safety", why
    try:
        mixture, intensity = tree_performance_inputs(turn.tree)
    except AffectLensError as exc:  # the tree names no emotion
        return {"neutral": 1.0}, NEUTRAL_INTENSITY, "neutral", f"{exc}: a neutral face"
    shown = " + ".join(f"{name} {weight:.0%}" for name, weight in mixture.items())
    why = (
        f"the supporter's empathic display of the turn's tree: {shown} at intensity {intensity:.2f} "
        "(generation.talking_head.EMPATHIC_DISPLAY: anger or disgust is met with calm concern, never mirrored)"
    )
    return mixture, intensity, "tree", why


def _reply_problems(text: str) -> list[str]:
    """What is wrong with a proposed reply (``fusion.safety.check_reply``: human claims, manipulation, ...)."""
    from fusion.safety import check_reply

    return list(check_reply(text))

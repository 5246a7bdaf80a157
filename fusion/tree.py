"""Builds the affective tree from analysis results: deterministic structured nodes, optional LM-written prose on top.

``build_tree(results)`` reads one or several ``AnalysisResult``s of the same moment (an image, a voice note and
typed text, or a video) and fills the seven stages of ``affectlens.tree.AffectTree``:

- ``attributes``: faces (count, tracks), the main face's mean head pose, gaze and quality, voice activity,
  speaking rate and pitch.
- ``expressions``: the main face's active AUs (mean intensity ≥ ``AU_ACTIVE_THRESHOLD``, FACS names), its
  expression, the vocal tone (voice emotion + prosody descriptors against ``PROSODY_REFERENCE``), salient words.
- ``emotion``: the fused distribution (``fusion.late``), ``uncertain`` when the fusion abstains, per-modality
  labels and weights, and whether the modalities agree or conflict (``CONFLICT_MIN_CONFIDENCE``).
- ``cause``: the sentence(s) holding the top salient words of the dominant text emotion; not observable without
  words.
- ``appraisal``: what the person likely needs, from ``EMOTION_NEEDS``.
- ``strategy``: ESConv strategies with why, from a pluggable ``Planner`` (default ``RulePlanner``, the documented
  ``STRATEGY_RULES``).
- ``reply``: a short supportive template reply built from the strategies (``REPLY_TEMPLATES``).

The words of the moment (every utterance's text) also go through the safety module (``fusion.safety``), whose
assessment is kept as ``AffectTree.safety``: on a ``crisis`` the strategy node becomes the safety plan
(``SAFETY_PLAN``) and the reply the crisis reply (``text_source="safety"``); when the person leans on the assistant
as their only support the reply sets a healthy boundary (``BOUNDARY_PLAN``); on a ``concern`` the planned reply gets
a gentle check-in. Every reply that leaves ``build_tree`` passes ``fusion.safety.check_reply``.

Every structured value comes from the results alone. A ``TreeWriter`` (the compact LM) may then write the prose of
``cause``, ``appraisal``, ``reply`` and the ``rationale`` (kept as the ``emotion`` node's text) from the finished
tree; its text lands in ``TreeNode.text`` with ``text_source="lm:<name>"`` and changes no structured value. A writer
cannot replace the safety module's reply, and a writer's reply that fails ``check_reply`` is refused. Without a
writer the prose comes from short templates (``text_source="template"``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any, Final, Literal, Protocol, runtime_checkable

import numpy as np

from affectlens.errors import WeightsError
from affectlens.labels import CANONICAL_EMOTIONS, ESCONV_STRATEGIES, FACS_NAMES
from affectlens.tree import AffectTree, Evidence, TreeNode
from affectlens.types import AnalysisResult, FaceObservation, FrameResult, Utterance
from fusion.late import FusedEmotion, LateFusion, LateFusionConfig, ModalityEvidence, collect_evidence, load_late_fusion
from fusion.safety import (
    RiskAssessment,
    RiskDetector,
    after_crisis,
    boundary_reply,
    check_in,
    check_reply,
    crisis_reply,
    disclosure_turn,
    follow_up_reply,
)
from fusion.wordlist import reads_as_english

logger = logging.getLogger(__name__)

__all__ = [
    "AU_ACTIVE_THRESHOLD",
    "BOUNDARY_PLAN",
    "CAUSE_UNOBSERVED_CONFIDENCE",
    "CONFLICT_MIN_CONFIDENCE",
    "EMOTION_NEEDS",
    "PROSODY_REFERENCE",
    "REPLY_TEMPLATES",
    "SAFETY_PLAN",
    "STRATEGY_RULES",
    "WRITER_KEYS",
    "Fuser",
    "Planner",
    "ProsodyReference",
    "RulePlanner",
    "TreeWriter",
    "build_tree",
    "default_fuser",
]

#: An AU counts as active when its mean intensity (0-5) over the main face's frames reaches this: FACS's
#: lowest scored level ("A", trace) sits around 1 on the geometric proxies of ``perception.face.geometry``.
AU_ACTIVE_THRESHOLD: Final = 1.0
#: What labels trees by default: ``"late"`` (calibrated late fusion) or ``"adapter"`` (the fusion adapter + LM),
#: whichever scored better on the held-back samples of ``scripts/train_fusion_adapter.py``.
DEFAULT_FUSION: Final[Literal["late", "adapter"]] = "late"
#: Two modalities conflict when their top labels differ and each is at least this sure of its own.
CONFLICT_MIN_CONFIDENCE: Final = 0.4
#: Salient words (most influential first) whose sentences are taken as the cause.
CAUSE_TOP_WORDS: Final = 3
#: At most this many sentences are quoted as the cause.
CAUSE_MAX_SENTENCES: Final = 2
#: The cause stage's confidence when nothing was said or typed: a scene alone rarely shows why.
CAUSE_UNOBSERVED_CONFIDENCE: Final = 0.1
#: At most this many salient words are listed in the expressions stage.
MAX_SALIENT_WORDS: Final = 8
#: Keys a ``TreeWriter`` may return, and the node whose ``text`` each one becomes.
WRITER_KEYS: Final[dict[str, str]] = {
    "cause": "cause",
    "appraisal": "appraisal",
    "rationale": "emotion",
    "reply": "reply",
}
_UNTRAINED = LateFusionConfig().fitted_on


@dataclass(frozen=True)
class ProsodyReference:
    """Reference values that turn prosody into words (``Prosody`` units: Hz, semitones, syllables/s, dBFS).

    Adult speaking pitch is about 85-180 Hz for men and 165-255 Hz for women (Titze, *Principles of Voice
    Production*, 1994): above ``pitch_high`` reads as raised for either, under ``pitch_low`` as low. A 10th-90th
    percentile range over ``range_wide`` semitones is lively intonation, under ``range_narrow`` flat. Conversational
    English runs at about 4-5 syllables/s (measured here with energy-peak nuclei, which undercount a little):
    over ``rate_fast`` is fast, under ``rate_slow`` slow. Loudness depends on the recording, so only clear
    extremes count: RMS over ``energy_loud`` dBFS is loud, under ``energy_quiet`` quiet.
    """

    pitch_high: float = 255.0
    pitch_low: float = 85.0
    range_wide: float = 8.0
    range_narrow: float = 2.0
    rate_fast: float = 5.5
    rate_slow: float = 2.5
    energy_loud: float = -15.0
    energy_quiet: float = -40.0

    def describe(
        self, pitch_mean: float | None, pitch_range: float | None, rate: float | None, energy: float | None
    ) -> list[str]:
        """Words for what stands out (empty when everything is within the usual range)."""
        out = []
        if pitch_mean is not None and pitch_mean > self.pitch_high:
            out.append("raised pitch")
        elif pitch_mean is not None and pitch_mean < self.pitch_low:
            out.append("low pitch")
        if pitch_range is not None and pitch_range > self.range_wide:
            out.append("lively intonation")
        elif pitch_range is not None and pitch_range < self.range_narrow:
            out.append("flat intonation")
        if rate is not None and rate > self.rate_fast:
            out.append("fast")
        elif rate is not None and 0 < rate < self.rate_slow:
            out.append("slow")
        if energy is not None and energy > self.energy_loud:
            out.append("loud")
        elif energy is not None and energy < self.energy_quiet:
            out.append("quiet")
        return out


PROSODY_REFERENCE: Final = ProsodyReference()

#: What a person feeling each emotion most likely needs from whoever answers (the appraisal table).
EMOTION_NEEDS: Final[dict[str, str]] = {
    "sadness": "comfort and being heard",
    "fear": "safety and reassurance",
    "anger": "acknowledgement and fairness",
    "happiness": "sharing the moment",
    "surprise": "making sense of the event",
    "disgust": "distance from what offends",
    "contempt": "respect and being taken seriously",
    "neutral": "attention, nothing urgent",
}
_NO_EMOTION_NEED = "to be asked how they are: nothing showed an emotion"

#: ESConv strategies per emotion, with why (the default planner's table; ``RulePlanner`` adds the rules for
#: uncertainty, conflict and an unobserved cause). Self-disclosure is never chosen: the replier has no life of its
#: own to disclose and must not pretend to.
STRATEGY_RULES: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "sadness": (
        ("Reflection of feelings", "name the sadness so they feel heard"),
        ("Affirmation and Reassurance", "they need comfort: say the feeling makes sense, without minimising it"),
    ),
    "fear": (
        ("Affirmation and Reassurance", "they need safety and reassurance"),
        ("Reflection of feelings", "acknowledge the worry before anything else"),
    ),
    "anger": (
        ("Restatement or Paraphrasing", "they need acknowledgement: show the grievance was understood"),
        ("Reflection of feelings", "accept the anger as legitimate without judging it"),
    ),
    "happiness": (
        ("Reflection of feelings", "share the moment by naming the joy"),
        ("Question", "invite them to tell more about what went well"),
    ),
    "surprise": (
        ("Restatement or Paraphrasing", "help make sense of the event by summing it up"),
        ("Question", "ask what happened and how they feel about it"),
    ),
    "disgust": (
        ("Reflection of feelings", "acknowledge what offends them"),
        ("Restatement or Paraphrasing", "show it was understood, keeping a distance from it"),
    ),
    "contempt": (
        ("Restatement or Paraphrasing", "take their view seriously by restating it"),
        ("Question", "ask what would feel fair to them"),
    ),
    "neutral": (("Question", "nothing urgent: attention, and an open question rather than a presumed feeling"),),
}
_MAX_STRATEGIES = 3

#: A restatement says back at least this many words (a fragment, "Kit", is not said back) ...
MIN_QUOTE_WORDS: Final = 3
#: ... and at most this many; a paraphrase at most ``MAX_PARAPHRASE_WORDS`` (longer ones read as a machine's echo).
MAX_QUOTE_WORDS: Final = 15
MAX_PARAPHRASE_WORDS: Final = 20
#: A statement without "I" is said back only with at least this many words.
MIN_STATEMENT_WORDS: Final = 4
#: A restatement does not start by pointing back at what came before ("That is what is upsetting him so much").
_POINTS_BACK: Final = re.compile(r"^(?:that|this|these|those)(?:'s| is| was| are| were| has| had)\b", re.IGNORECASE)
#: First-person words a restatement turns to the second person (``second_person``).
_TO_YOU: Final[dict[str, str]] = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're", "im": "you're",
    "i've": "you've", "ive": "you've", "i'd": "you'd", "i'll": "you'll",
}  # fmt: skip
#: ... and the verbs of "I" ("am" only ever is; "was" and "wasn't" when "I" is one of the two words before).
_AFTER_I: Final[dict[str, str]] = {"am": "are", "was": "were", "wasn't": "weren't"}
_SECOND: Final = frozenset({"you", "your", "yours", "you're", "yourself", "u", "ur"})
#: First-person plural: a restatement cannot turn "we" to "you" (it would speak as the person), so it is left out.
_PLURAL: Final = frozenset({"we", "us", "our", "ours", "ourselves", "we're", "we've", "we'd", "we'll"})
_OPENERS: Final = frozenset({"but", "and", "so", "also", "well", "honestly", "actually", "anyway"})
_WORD: Final = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)?")
#: A sentence starting with one of these is a question (with or without its "?"): not restated as a statement.
_QUESTION_STARTS: Final = frozenset({
    "am", "is", "are", "was", "were", "do", "does", "did", "can", "could", "should", "would", "will", "have", "has",
    "had", "how", "what", "why", "when", "where", "who", "which",
})  # fmt: skip
#: Subject words: what follows the verb of a question typed without its "?" ("Is there ...", "Should I ...", not
#: "Could be better"), and what a paraphrase may start with ("they have been ...", not "hoping you won't ..." or the
#: misspelt "its a pretty intense situation you admit").
_SUBJECTS: Final = frozenset({
    "i", "you", "u", "your", "you're", "you've", "you'd", "you'll", "it", "it's", "this", "that", "these", "those",
    "there", "there's", "he", "he's", "she", "she's", "they", "they're", "they've", "we", "the", "a", "an", "my", "his",
    "her", "their", "our", "anyone", "anybody", "someone", "somebody", "people", "everyone", "everybody", "everything",
    "nobody", "nothing", "no", "all",
})  # fmt: skip
#: The restatement in the person's own words, turned to "you" (``second_person``).
RESTATEMENT_TEMPLATE: Final = "If I understand you right, you're saying that {restated}."
#: Template sentences per strategy (``{feeling}``: a feeling word; ``{quote}``: the cause, quoted). The replies
#: acknowledge, reassure and ask; they never pressure, flatter or claim to be a person.
REPLY_TEMPLATES: Final[dict[str, str]] = {
    "Reflection of feelings": "It sounds like you're feeling {feeling}.",
    "Restatement or Paraphrasing": "If I understand you right, this is about “{quote}”.",
    "Affirmation and Reassurance": "That's a lot to deal with, and it makes sense to feel this way.",
    "Providing Suggestions": "If it would help, we could think through one small next step together.",
    "Information": "I can share some information about this, if that would be useful.",
    "Others": "I'm here to listen.",
    "Question": "Would you like to tell me more about it?",
}
_FEELINGS: Final[dict[str, str]] = {
    "sadness": "sad and low",
    "fear": "worried",
    "anger": "frustrated",
    "happiness": "happy",
    "surprise": "caught off guard",
    "disgust": "put off",
    "contempt": "let down by how this was handled",
}
_REASSURANCE: Final[dict[str, str]] = {
    "fear": "It's understandable to feel uneasy, and you can take this one step at a time.",
    "happiness": "That's really good to hear.",
    "neutral": "Thank you for telling me about this.",
}
#: The kind of gladness a happy reading is, by the words' strongest positive GoEmotions label: the text model's
#: happiness holds all of them, and only good news is "really good to hear" (``docs/dialogue-replies.md``).
GLADNESS: Final[dict[str, str]] = {
    **dict.fromkeys(("joy", "excitement", "relief", "pride"), "good news"),
    "gratitude": "thanks",
    **dict.fromkeys(("optimism", "desire"), "hope"),
    # amusement is often a nervous "lol" beside bad news ("No one showed up ... lol"): not good news
    **dict.fromkeys(("approval", "admiration", "caring", "love", "amusement"), "acknowledgement"),
}
#: GoEmotions labels of the negative canonical emotions (sadness, fear, anger, disgust), which good news must
#: outweigh together.
NEGATIVE_FINE: Final = (
    "sadness", "disappointment", "embarrassment", "grief", "remorse", "fear", "nervousness", "anger", "annoyance",
    "disapproval", "disgust",
)  # fmt: skip
#: The feeling a reflection names for each kind of gladness (None: no feeling is named).
_GLAD_FEELINGS: Final[dict[str, str | None]] = {
    "joy": "happy", "amusement": None, "excitement": "excited", "relief": "relieved", "pride": "proud",
    "optimism": "hopeful", "desire": "hopeful", "gratitude": None, "approval": None, "admiration": None,
    "caring": None, "love": None,
}  # fmt: skip
#: The reassurance for hard news the text model does not read as sad: a neutral reading whose negative GoEmotions
#: labels together reach ``HARD_NEWS_NEGATIVE`` ("I have been isolated for 2 years now ever since my wife ...
#: run away"), or a gladness they outweigh ("It's going to be nearly impossible to find something good now").
HARD_NEWS: Final = "That sounds really hard, and I'm glad you told me."
HARD_NEWS_NEGATIVE: Final = 0.30
#: Good news is hard news only when the negative labels weigh this many times as much (else it is mixed).
HARD_NEWS_RATIO: Final = 2.0
#: Gladness that we are here or talking ("I'm glad you're here"): answered in kind, not asked "What made it so good?".
_GLAD_OF_US: Final = re.compile(
    r"\b(?:glad|happy|good|nice|great|grateful|thankful)\b[^.!?]{0,25}\b(?:(?:you|u)(?:'re| are)? "
    r"(?:here|there|listening|around)|(?:talk|talking|chat|chatting|speak|speaking) (?:to|with) (?:you|u|someone))\b",
    re.IGNORECASE,
)
GLAD_TO_BE_HERE: Final = "I'm glad to be here with you."
#: (reassurance, question) for each kind of gladness but good news (which keeps ``_REASSURANCE`` and
#: ``_QUESTIONS``' happiness sentences).
_GLAD_SENTENCES: Final[dict[str, tuple[str, str]]] = {
    "hard news": (HARD_NEWS, REPLY_TEMPLATES["Question"]),
    "glad we're talking": (GLAD_TO_BE_HERE, "What's on your mind?"),
    "thanks": ("You're welcome. I'm glad if this helps.", "How are you feeling now?"),
    "thanks, and more": ("You're welcome, and thank you for telling me more.", "How are you feeling about it?"),
    "hope": ("Thank you for telling me.", "How are you feeling about it?"),
    "acknowledgement": ("Thank you for telling me.", "How are you feeling about it?"),
}
#: Thanks followed by at least this many more words is thanked and the rest acknowledged ("thanks, and more").
THANKS_AND_MORE_WORDS: Final = 4
_THANKS: Final = re.compile(
    r"\b(?:thanks?|thank you|thx|ty|appreciate (?:it|that|you))\b(?: (?:so|very) much| a lot)?[^.!?]*[.!?]*", re.I
)
#: The person has just said how they are or feel: a generic feeling question would ask it again.
_FEELING_WORDS: Final = (
    r"(?:sad|upset|depressed|depression|unhappy|miserable|hopeless|heartbroken|lonely|down|scared|afraid|worried|"
    r"anxious|anxiety|nervous|frightened|terrified|panicked|angry|mad|furious|annoyed|frustrated|stress|stressed|"
    r"mood|tired|exhausted|overwhelmed|bad|low|lost|confused|happy|glad|excited|struggling|empty|alone|numb|hurt|"
    r"hurting|blue|drained|awful|terrible|horrible)"
)
_SAID_HOW_THEY_ARE: Final = re.compile(
    r"\b(?:i|i'm|im|iam|i've|ive)\b[^.!?]{0,20}\bfeel(?:s|ing)?\b|"
    r"\b(?:i'm|im|iam|i am)\s+(?:\w+\s+)?(?:good|fine|ok|okay|okie|okey|alright|well|great|doing|"
    r"not (?:good|great|well|ok|okay))\b|"
    rf"\b(?:i'm|im|iam|i am|i've been|ive been|i have been|i get|i was)\b[^.!?]{{0,30}}\b{_FEELING_WORDS}\b|"
    r"^\W*(?:doing|feeling|been)\s+(?:\w+\s+)?(?:good|well|fine|ok|okay|alright|great|better|bad|badly|terrible|"
    r"awful|not (?:good|great|well))\b|"
    rf"\b(?:sort of|kind of|kinda|pretty|so|very|really|a bit|a little|quite)\s+{_FEELING_WORDS}\b|"
    r"^\W*(?:yes|yeah|yep|yup|correct|exactly|right|true|indeed|that is (?:correct|right|true)|"
    r"that's (?:correct|right|true))\b[^?]{0,20}$",
    re.IGNORECASE,
)
#: A short message (at most ``SHORT_STATE_WORDS`` words) naming a state ("good", "my stress very high") has said how
#: they are.
SHORT_STATE_WORDS: Final = 8
_STATE: Final = re.compile(
    rf"\b(?:{_FEELING_WORDS}|good|fine|okay|ok|okie|okey|great|alright|better|worse|energy)\b",
    re.IGNORECASE,
)
#: A request for help or to talk, before anything has been told ("Can you help me?", "I would like to talk").
_ASKS_FOR_HELP: Final = re.compile(
    r"\b(?:can|could|will|would) (?:you|u) (?:please )?help\b|\bhelp me\b|\bi need (?:some )?(?:help|support)\b|"
    r"\b(?:would like|want|need) to talk\b|\blooking for (?:someone|somebody) to talk\b|\bplease respond\b",
    re.IGNORECASE,
)
HERE_FOR_YOU: Final = "I'm here for you, and I'm listening."
#: A request for advice ("Got any advice?", "What should I do?"): met by a suggestion, the topic's (``SUGGESTIONS``)
#: when one is named.
_ASKS_FOR_ADVICE: Final = re.compile(
    r"\b(?:any|some|your) (?:advice|tips|suggestions?)\b|\bwhat (?:should|can|could) i do\b|"
    r"\bwhat can you tell me\b|\bhow (?:can|do|could|should) i\b|\bany (?:input|ideas|thoughts)\b|"
    r"\bwhat (?:do|would) you (?:suggest|recommend)\b|\b(?:i'll|i will) try anything\b|"
    r"\b(?:not sure|don't know|dont know|no idea) what (?:to do|i should do|i can do)\b|"
    r"\bhow (?:am i|are we) (?:supposed|meant|going) to\b|"
    r"\bhow (?:to|do you|can you|can one) (?:overcome|cope|deal|get over|handle|move on|get through|stop)\b",
    re.IGNORECASE,
)
#: A general suggestion per topic, for when advice is asked for: (topic, what names it, the suggestion), most
#: specific first. Everyday self-care and pointers to people and professionals only: nothing a template cannot stand
#: behind for anyone (no diagnosis, no medication, no promises).
SUGGESTIONS: Final[tuple[tuple[str, re.Pattern[str], str], ...]] = tuple(
    (topic, re.compile(pattern, re.IGNORECASE), suggestion)
    for topic, pattern, suggestion in (
        ("sleep", r"\b(?:sleep\w*|insomnia|awake|nightmares?)\b",
         "Some people find that a steady bedtime, a screen-free last hour, and getting up for a while when sleep "
         "won't come make the nights easier."),
        ("therapy", r"\b(?:support groups?|therap\w+|counsell?or\w*|counsell?ing|psycholog\w+|mental health)\b",
         "A doctor or a local mental health organisation can point you to a therapist or a support group, and many "
         "groups also meet online or by phone."),
        ("children", r"\b(?:kids?|children|child|son|daughter|toddler|teenager|parenting)\b",
         "Many parents find it helps to pause for a breath before responding, and to set aside a little calm time "
         "with the children each day."),
        ("study", r"\b(?:exams?|tests?|school|college|university|classes|grades?|homework|studying|study|thesis|"
         r"advisor|professor|prof)\b",
         "Breaking the work into short sessions with small breaks, and asking a teacher or classmate about the "
         "hardest part, can make it more manageable."),
        ("work", r"\b(?:jobs?|fired|laid off|layed off|unemploy\w*|career|boss|co-?workers?|furlough\w*|employer|"
         r"workplace|at work|my work|resume|interview)\b",
         "It can help to pick one small, concrete step for this week, like one application or one conversation, "
         "and to talk it over with someone you trust."),
        ("relationship", r"\b(?:break ?up|broke up|breaking up|divorce\w*|ex|boyfriend|girlfriend|husband|wife|"
         r"partner|fiancee?|relationship|marriage|married)\b",
         "It can help to lean on friends or family for a while and to give yourself time; some people find that "
         "writing down what they feel helps them sort it out."),
        ("loneliness", r"\b(?:friends?|lonely|loneliness|alone|isolated|isolation|left out)\b",
         "Reaching out to one person, even with a short message, or joining a group around something you enjoy can "
         "be a gentle way to feel less alone."),
        ("pandemic", r"\b(?:covid|pandemic|lockdowns?|quarantine\w*|restrictions)\b",
         "Keeping a simple daily routine and staying in touch with people by phone or video can make the "
         "restrictions easier to bear."),
        ("stress", r"\b(?:anxi\w+|stress\w*|panic\w*|overwhelm\w*|worr\w+|pressure)\b",
         "Slow breathing, a short break outside, or writing the worries down can take the edge off, and talking to "
         "someone you trust can help too."),
        ("low mood", r"\b(?:depress\w*|low|sad|sadness|hopeless|empty|no interest|unmotivated)\b",
         "On low days small things can help a little: a short walk, a regular routine, and telling someone you "
         "trust how you feel; if it lasts, a doctor or therapist can help."),
    )
)  # fmt: skip


def suggestion_for(words: str, history: Sequence[str] = ()) -> tuple[str, str] | None:
    """(topic, suggestion) of the first ``SUGGESTIONS`` topic named in ``words``, else in the earlier turns
    ``history`` (the latest first); None when none is."""
    for text in (t.replace("’", "'") for t in (words, *reversed(history))):
        for topic, pattern, suggestion in SUGGESTIONS:
            if pattern.search(text):
                return topic, suggestion
    return None


#: A request for validation ("Am I right to feel this way?"), met by saying the feeling makes sense.
_ASKS_FOR_VALIDATION: Final = re.compile(
    r"\b(?:am i (?:right|wrong|crazy|overreacting)|is it (?:ok|okay|normal|wrong|bad) (?:to|that i)|"
    r"is (?:this|that|it) (?:normal|ok|okay))\b",
    re.IGNORECASE,
)
IT_MAKES_SENSE: Final = "It makes sense that you feel this way."
#: The question that replaces a generic feeling question when they have just said how they feel.
TELL_ME_WHAT_HAPPENED: Final = "Would you like to tell me more about what's been happening?"
_GREET: Final = (
    r"(?:(?:hi+|hello+|hey+|hiya|howdy|greetings|good (?:morning|afternoon|evening|day))(?: there| again)?|"
    r"(?:it's |it is )?(?:nice|good|great|pleased|glad|lovely) to (?:meet|talk to|chat with|speak (?:to|with)|see) "
    r"(?:you|u)(?: too)?)"
)
#: When "how are you" may ask about: "doing", "today", "this morning", ...
_HOW_WHEN: Final = r"(?: doing)?(?: today| tonight| this (?:morning|afternoon|evening))?"
_HOW_ARE_YOU: Final = (
    rf"(?:how are (?:you|u){_HOW_WHEN}|how(?:'s| is) it going|"
    r"how are things|how have you been|how are we(?: doing)?(?: today)?|"
    r"(?:and|how about|what about) (?:you|u|yourself|urself)(?: doing)?|"
    r"(?:are )?(?:you|u) (?:doing )?(?:alright|all right|ok|okay|well|good))"
)
#: A presence check ("anybody home?", "Is anyone there?", "Are you there?"): answered like a greeting.
_PRESENCE: Final = (
    r"(?:is )?(?:there )?(?:any ?(?:one|body)|some ?(?:one|body)) (?:home|there|here|around|online|available)|"
    r"are (?:you|u) (?:still )?(?:there|here|around)"
)
#: A message that is only a greeting, perhaps asking how we are, or a presence check (its words lower-cased, one
#: space apart).
_GREETING_ONLY: Final = re.compile(rf"(?:{_GREET} ?)+(?:{_HOW_ARE_YOU})?|{_HOW_ARE_YOU}|(?:{_GREET} ?)*(?:{_PRESENCE})")
#: The reply to a message that is only a greeting: at the start, when it asks how we are (no day or feelings of our
#: own are claimed), and later in a conversation.
GREETING_REPLIES: Final[dict[str, str]] = {
    "greeting": "Hello, I'm glad you reached out. What's on your mind today?",
    "greeting, asking how we are": (
        "Hello, and thank you for asking. I'm here and ready to listen. How are you doing today?"
    ),
    "greeting again": "I'm here, and I'm listening. Go on whenever you're ready.",
    "asking how we are": "Thank you for asking. I'm here and ready to listen. What's on your mind?",
}
#: A question about the assistant's own experience ("have you ever felt that way?"): answered honestly first.
_ABOUT_OUR_EXPERIENCE: Final = re.compile(
    r"\b(?:have|did) you (?:ever )?(?:felt|feel|been through|gone through|go through|had|experienced?|lost)\b|"
    r"\b(?:have|did|do) you ever\b|"  # "Have you ever failed a test?"
    r"\bhas (?:this|that|it) ever happened to you\b|\bwhat was it like for you\b",
    re.IGNORECASE,
)
AI_EXPERIENCE_ANSWER: Final = "I'm an AI, so I haven't lived through it myself, but many people feel this way."
#: "How are you?" asked inside a longer message ("Hey, I'm doing well, how are you?"): thanked first.
_ASKS_HOW_WE_ARE: Final = re.compile(
    rf"\bhow are (?:you|u|we){_HOW_WHEN}\s*(?:[?!.,]|$)|"
    r"\bhow are (?:you|u) (?!feeling|going|supposed|able)\w+\s*\?|"  # "how are you Carolyn?"
    r"\b(?:and|how about|what about) (?:you|u|yourself|urself)\s*(?:\?|$)|"  # "fine what about you"
    r"\b(?:are )?(?:you|u) (?:doing )?(?:alright|all right|ok|okay|well|good)\s*\?|"  # "You doing alright?"
    r"(?:^|[.!,;]\s*)(?:and )?(?:you|u)\s*\?",  # "ok. you?"
    re.IGNORECASE,
)
THANKED_FOR_ASKING: Final = "Thank you for asking; I'm here and ready to listen."
#: Someone close (or a pet) whose death may be told.
_KIN: Final = (
    r"(?:mom|mum|mother|dad|father|parents?|husband|wife|partner|fiancee?|boyfriend|girlfriend|son|daughter|child|"
    r"baby|brother|sister|sibling|grandma|grandmother|grandpa|grandfather|grandparents?|aunt|uncle|cousin|nephew|"
    r"niece|dog|cat|pet)"
)
#: A death told ("My fiance died four years ago today", "I lost my mother", "since my dad's funeral"): condolences
#: first. Not "my mom almost died", "I lost my job", nor a friendship lost.
_LOSS: Final = re.compile(
    rf"\b(?:my|our) (?:\w+ ){{0,2}}?(?:{_KIN}|friend|best friend)\b[^.!?]{{0,40}}"
    r"(?<!almost )(?<!nearly )(?<!never )(?<!not )(?<!could have )"
    r"\b(?:died|passed away|passed on|was killed|were killed|took (?:his|her|their) own life)\b|"
    rf"\b(?:lost|losing) my (?:\w+ ){{0,2}}?{_KIN}\b(?! (?:job|keys?|phone|wallet)| to (?:another|someone|somebody|"
    r"a (?:new|younger|different)|other))|"
    rf"\b(?:death|funeral|loss) of my (?:\w+ ){{0,2}}?(?:{_KIN}|friend|best friend)\b|"
    rf"\bmy (?:\w+ ){{0,2}}?(?:{_KIN}|friend|best friend)(?:'s)? (?:death|funeral|passing)\b",
    re.IGNORECASE,
)
CONDOLENCE: Final = "I'm so sorry for your loss."
#: A last sentence that asks for the supporter's knowledge or view ("Do you think ...?", "Is it normal ...?"), not
#: for something done ("Can you help me?", "Are you there?").
_ASKS_OUR_VIEW: Final = re.compile(
    r"^(?:do|does|did|would|could|can|will|is|are|was|were|should)\s+(?!you\b|u\b|any(?:one|body)\b|some(?:one|body)\b)|"
    r"\b(?:do you think|what do you think|do you know|any idea|is it normal|what would you do|"
    r"your (?:opinion|advice|view|thoughts))\b",
    re.IGNORECASE,
)
CANNOT_KNOW: Final = "I can't know that for sure, but I'm glad to think it through with you."
#: ``CANNOT_KNOW`` when a suggestion follows (which offers to think it through already).
CANNOT_KNOW_SHORT: Final = "I can't know that for sure."


def _openers(words: str) -> tuple[list[str], bool]:
    """The sentences a template reply opens with for what the person told or asked of the supporter, and whether they
    asked about our own experience (then their words are answered, not said back): condolences for a death told
    (``_LOSS``); the honest experience answer; thanks
    for asking how we are; "I'm here for you" to a request for help or to talk; "It makes sense that you feel this
    way" to a request for validation; nothing for a request for advice (the suggestion sentence answers it); else an
    honest "I can't know that for sure" for a question asking our knowledge or view."""
    condolence = [CONDOLENCE] if _LOSS.search(words) else []  # (words with straight apostrophes)
    if _ABOUT_OUR_EXPERIENCE.search(words):
        return [*condolence, AI_EXPERIENCE_ANSWER], True
    openers = [*condolence, THANKED_FOR_ASKING] if _ASKS_HOW_WE_ARE.search(words) else condolence
    if _ASKS_FOR_HELP.search(words):
        openers.append(HERE_FOR_YOU)
    if _ASKS_FOR_VALIDATION.search(words):
        return [*openers, IT_MAKES_SENSE], False
    if _ASKS_FOR_ADVICE.search(words):  # the suggestion sentence answers it (added by ``_template_reply``)
        return openers, False
    last = last_question(words)
    if last and _ASKS_OUR_VIEW.search(last) and not (openers and _ASKS_HOW_WE_ARE.search(last)):
        openers.append(CANNOT_KNOW)  # ("how are you?" is thanked, not unknowable)
    return openers, False


def last_question(words: str) -> str | None:
    """The message's last sentence when it is a question: it ends with "?", or starts as one ("Is there any idea
    about covid" typed without its question mark); None otherwise."""
    sentences = [m.strip() for m in re.findall(r"[^.!?]+[.!?]*", words) if m.strip(" .!?")]
    if not sentences:
        return None
    last = sentences[-1]
    if last.endswith("?"):
        return last
    words_ = [w.lower() for w in _WORD.findall(last)]
    starts = len(words_) > 1 and words_[0] in _QUESTION_STARTS and words_[1] in _SUBJECTS  # not "Could be better"
    return last if starts and not last.endswith((".", "!")) else None


#: The order a template reply's sentences follow, whatever order the strategies were chosen in.
_REPLY_ORDER: Final = (
    "Reflection of feelings", "Restatement or Paraphrasing", "Affirmation and Reassurance", "Providing Suggestions",
    "Information", "Others", "Self-disclosure", "Question",
)  # fmt: skip
_QUESTIONS: Final[dict[str, str]] = {
    "uncertain": "How are you feeling about it?",
    "conflict": "I want to be sure I understand: how are you feeling about it?",
    "unobserved": "Would you like to tell me what's on your mind?",
    "happiness": "What made it so good?",
    "surprise": "How do you feel about it now?",
}
#: The generic questions about how they feel (``_template_reply`` asks what happened instead when they have said it).
_FEELING_QUESTIONS: Final = frozenset({_QUESTIONS["uncertain"], _QUESTIONS["surprise"], "How are you feeling now?"})
#: The safety plan that replaces the planner's strategies on a crisis: each strategy with its part in
#: ``fusion.safety.crisis_reply`` (the risk's ``why`` comes first in each strategy's why).
SAFETY_PLAN: Final[tuple[tuple[str, str], ...]] = (
    ("Affirmation and Reassurance", "reassure calmly, without judging: they matter, are not alone and not to blame"),
    ("Information", "point to real help now: the emergency number and a crisis line"),
    ("Question", "ask gently whether they are safe right now"),
)
#: The plan when someone leans on the assistant as their only support (``fusion.safety.boundary_reply``).
BOUNDARY_PLAN: Final[tuple[tuple[str, str], ...]] = (
    ("Affirmation and Reassurance", "welcome the trust warmly"),
    ("Information", "say honestly that this is an AI, and point to the people in their life and to professionals"),
    ("Question", "ask who they could reach out to"),
)
#: The plan on a turn after a crisis whose own words raise nothing (``fusion.safety.follow_up_reply``).
FOLLOW_UP_PLAN: Final[tuple[tuple[str, str], ...]] = (
    ("Affirmation and Reassurance", "thank them and keep the earlier disclosure in view, calmly"),
    ("Providing Suggestions", "nudge towards the people near them; keep the crisis line and emergency number at hand"),
    ("Question", "ask how they are feeling now rather than repeating the crisis message"),
)
#: The old human-claim check, kept for callers that import it; replies are checked by ``fusion.safety.check_reply``.
_CLAIMS_HUMAN = re.compile(
    r"\b(i am|i'm|as) (a|an) (human|person|real person|man|woman)\b|\bi am not an? (ai|bot|machine|program)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")
_MODALITY_NAMES: Final = {"face": "the face", "voice": "the voice", "text": "the words"}
_MODALITY_VERBS: Final = {"face": "shows", "voice": "sounds like", "text": "say"}


@runtime_checkable
class Fuser(Protocol):
    """Pools per-modality evidence into one emotion (``fusion.late.LateFusion`` is one; the adapter+LM,
    ``fusion.reasoner.AdapterReasoner``, reads its modality tokens from ``results``)."""

    def __call__(
        self, evidence: Sequence[ModalityEvidence], results: Sequence[AnalysisResult] = ()
    ) -> FusedEmotion: ...


@runtime_checkable
class TreeWriter(Protocol):
    """Writes prose for a finished tree: any of ``WRITER_KEYS`` (``cause``, ``appraisal``, ``rationale``,
    ``reply``) mapped to text. It reads the structured nodes (and may read the results they came from) and cannot
    change them."""

    name: str

    def write(self, tree: AffectTree, results: Sequence[AnalysisResult] = ()) -> Mapping[str, str]: ...


@runtime_checkable
class Planner(Protocol):
    """Chooses ESConv strategies from the tree so far (``strategy`` and ``reply`` are ``TreeNode.pending``):
    a list of (strategy, why, confidence), the first the main one."""

    def __call__(self, tree: AffectTree) -> list[tuple[str, str, float]]: ...


def default_fuser() -> Fuser:
    """The fuser that labels trees by default: the better of late fusion and the adapter + LM on the held-back
    comparison (``DEFAULT_FUSION``; ``docs/fusion-comparison.md``)."""
    if DEFAULT_FUSION == "adapter":
        from fusion.reasoner import build_default_reasoner

        return build_default_reasoner()
    return late_fuser()


def late_fuser() -> LateFusion:
    """The shipped, fitted late fusion; the untrained prior ``LateFusion()`` (with a logged warning) when the
    fitted parameters cannot be found. ``build_tree`` notes the prior in the tree's warnings."""
    try:
        return load_late_fusion()
    except (WeightsError, FileNotFoundError) as exc:
        reason = str(exc) if len(str(exc)) <= 160 else str(exc)[:157] + "..."
        logger.warning("late fusion: fitted parameters unavailable (%s); using the untrained prior", reason)
        return LateFusion()


# ---- reading the results ------------------------------------------------------------------------------------


def _flatten(results: AnalysisResult | Iterable[AnalysisResult]) -> list[AnalysisResult]:
    """The results with multimodal results replaced by their parts."""
    items = [results] if isinstance(results, AnalysisResult) else list(results)
    out: list[AnalysisResult] = []
    for r in items:
        parts = getattr(r, "parts", ())
        out.extend(_flatten(parts) if parts else [r])
    return out


@dataclass(frozen=True)
class _Seen:
    """One face observation with where it was seen."""

    result: AnalysisResult
    frame: FrameResult
    face: FaceObservation

    @property
    def timed(self) -> bool:
        return self.result.kind == "video"


def _main_face(results: list[AnalysisResult]) -> list[_Seen]:
    """The observations of the person most present: grouped by (input, track) in videos and (input, face index) in
    images; the group with the most observations wins, then the one with the largest mean box."""
    groups: dict[tuple[int, int], list[_Seen]] = {}
    for i, r in enumerate(results):
        for frame in r.frames:
            for face in frame.faces:
                key = (i, face.track_id if face.track_id is not None else face.index)
                groups.setdefault(key, []).append(_Seen(r, frame, face))
    if not groups:
        return []

    def size(seen: list[_Seen]) -> tuple[int, float]:
        areas = [(s.face.box[2] - s.face.box[0]) * (s.face.box[3] - s.face.box[1]) for s in seen]
        return len(seen), float(np.mean(areas))

    return max(groups.values(), key=size)


def _span(seen: Sequence[_Seen]) -> tuple[float | None, float | None, tuple[int, int] | None]:
    times = [s.frame.time for s in seen if s.timed]
    indices = [s.frame.index for s in seen]
    return (
        min(times) if times else None,
        max(times) if times else None,
        (min(indices), max(indices)) if indices else None,
    )


def _spoken(results: list[AnalysisResult]) -> list[tuple[AnalysisResult, Utterance]]:
    return [(r, u) for r in results if r.kind in ("audio", "video") for u in r.utterances]


def _worded(results: list[AnalysisResult]) -> list[tuple[AnalysisResult, Utterance]]:
    return [(r, u) for r in results for u in r.utterances if u.text and u.text_emotion is not None]


def _utterance_span(u: Utterance) -> tuple[float | None, float | None]:
    return (u.start, u.end) if u.end > u.start else (None, None)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _weighted_mean(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    """Mean of the values that are not ``None``, weighted (each weight at least 1e-6)."""
    pairs = [(float(v), max(float(w), 1e-6)) for v, w in zip(values, weights, strict=True) if v is not None]
    if not pairs:
        return None
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


# ---- the stages ---------------------------------------------------------------------------------------------


def _attributes(results: list[AnalysisResult], main: list[_Seen], multi: bool) -> TreeNode:
    evidence: list[Evidence] = []
    confidences: list[float] = []
    frames = [f for r in results for f in r.frames]
    pictured = [r for r in results if r.kind in ("image", "video")]
    tracks = {
        (i, f.track_id) for i, r in enumerate(results) for fr in r.frames for f in fr.faces if f.track_id is not None
    }
    faces_value: dict[str, Any] = {
        "count": max((len(f.faces) for f in frames), default=0),
        "observations": sum(len(f.faces) for f in frames),
        "tracks": len(tracks) if tracks else None,
        "frames": len(frames),
        "frames_with_faces": sum(1 for f in frames if f.faces),
    }
    main_value: dict[str, Any] | None = None
    if main:
        start, end, frame_range = _span(main)
        source = main[0].result.source if multi else None
        poses = [s.face.pose for s in main if s.face.pose is not None]
        gazes = [s.face.gaze for s in main if s.face.gaze is not None]
        closed = [s.face.eyes_closed for s in main if s.face.eyes_closed is not None]
        quality = float(np.mean([s.face.quality.score for s in main]))
        track = main[0].face.track_id
        main_value = {
            "source": main[0].result.source,
            "track_id": track,
            "observations": len(main),
            "quality": round(quality, 4),
            "head_pose": None
            if not poses
            else {k: round(float(np.mean([getattr(p, k) for p in poses])), 1) for k in ("yaw", "pitch", "roll")},
            "gaze": None
            if not gazes
            else {k: round(float(np.mean([getattr(g, k) for g in gazes])), 1) for k in ("yaw", "pitch")},
            "eyes_closed_share": None if not closed else round(sum(closed) / len(closed), 3),
        }
        confidences.append(quality)
        who = f"track {track}" if track is not None else f"face #{main[0].face.index}"
        evidence.append(
            Evidence("face", f"main face ({who}): {len(main)} observation(s), mean quality {quality:.2f}", start, end,
                     frame_range, source, {"quality": round(quality, 4)})
        )  # fmt: skip
        if main_value["head_pose"]:
            pose = main_value["head_pose"]
            cue = f"head yaw {pose['yaw']:+.0f}°, pitch {pose['pitch']:+.0f}°, roll {pose['roll']:+.0f}°"
            evidence.append(Evidence("face", cue, start, end, frame_range, source, pose))
        if main_value["gaze"]:
            gaze = main_value["gaze"]
            cue = f"gaze yaw {gaze['yaw']:+.0f}°, pitch {gaze['pitch']:+.0f}° (eye in head)"
            evidence.append(Evidence("face", cue, start, end, frame_range, source, gaze))
    if faces_value["count"] > 1:
        evidence.append(Evidence("scene", f"{faces_value['count']} faces in view at once", value=faces_value["count"]))
    if pictured and not main:
        evidence.append(Evidence("scene", f"no face found in {len(frames)} frame(s)"))

    voice_value = None
    spoken = _spoken(results)
    audio = [r for r in results if r.kind == "audio" or (r.kind == "video" and r.utterances)]
    if audio:
        seconds = [max(u.end - u.start, 0.0) for _, u in spoken]
        speech = float(sum(seconds))
        durations = [r.duration for r in audio if r.duration]
        duration = float(sum(durations)) if durations else None
        prosodies = [u.prosody for _, u in spoken]
        rate = _weighted_mean([p.speaking_rate if p else None for p in prosodies], seconds)
        pitch = _weighted_mean([p.pitch_mean if p else None for p in prosodies], seconds)
        pitch_range = _weighted_mean([p.pitch_range if p else None for p in prosodies], seconds)
        energy = _weighted_mean([p.energy if p else None for p in prosodies], seconds)
        voice_value = {
            "utterances": len(spoken),
            "speech_seconds": round(speech, 3),
            "duration": _r(duration),
            "voice_activity": None if not duration else round(min(speech / duration, 1.0), 4),
            "speaking_rate": _r(rate, 2),
            "pitch_mean": _r(pitch, 1),
            "pitch_range": _r(pitch_range, 2),
            "energy": _r(energy, 1),
        }
        confidences.append(speech / (speech + 1.0))
        start = min((u.start for _, u in spoken), default=None)
        end = max((u.end for _, u in spoken), default=None)
        source = audio[0].source if multi and len(audio) == 1 else None
        of = f" of {duration:.1f} s" if duration else ""
        evidence.append(Evidence("voice", f"{len(spoken)} utterance(s), {speech:.1f} s of speech{of}", start, end,
                                 source=source, value=voice_value["voice_activity"]))  # fmt: skip
        if rate is not None or pitch is not None:
            bits = ([f"{rate:.1f} syllables/s"] if rate is not None else []) + (
                [f"mean pitch {pitch:.0f} Hz"] if pitch is not None else []
            )
            evidence.append(Evidence("voice", "speaking " + ", ".join(bits), start, end, source=source))

    words_value = None
    worded = _worded(results)
    if worded:
        count = sum(len((u.text or "").split()) for _, u in worded)
        typed = all(r.kind == "text" for r, _ in worded)
        words_value = {"texts": len(worded), "words": count, "typed": typed}
        confidences.append(1.0)
        evidence.append(Evidence("text", f"{count} word(s) in {len(worded)} {'text' if typed else 'utterance'}(s)"))
    value = {"faces": faces_value, "main_face": main_value, "voice": voice_value, "words": words_value}
    confidence = float(np.mean(confidences)) if confidences else 0.0
    return TreeNode("attributes", value, confidence, tuple(evidence))


def _expressions(
    results: list[AnalysisResult], main: list[_Seen], evidence_by: dict[str, ModalityEvidence], multi: bool
) -> TreeNode:
    evidence: list[Evidence] = []
    confidences: list[float] = []
    aus_value: list[dict[str, Any]] = []
    face_value = None
    reference = None
    if main:
        source = main[0].result.source if multi else None
        with_aus = [s for s in main if s.face.aus]
        if with_aus:
            references = {s.face.au_reference for s in with_aus if s.face.au_reference}
            reference = "track" if "track" in references else (references.pop() if references else None)
            for au in FACS_NAMES:
                values = [s.face.aus.get(au, 0.0) for s in with_aus]  # type: ignore[union-attr]
                mean = float(np.mean(values))
                if mean < AU_ACTIVE_THRESHOLD:
                    continue
                active = [s for s, v in zip(with_aus, values, strict=True) if v >= AU_ACTIVE_THRESHOLD]
                aus_value.append(
                    {"au": au, "name": FACS_NAMES[au], "intensity": round(mean, 2),
                     "active_share": round(len(active) / len(with_aus), 3)}
                )  # fmt: skip
            aus_value.sort(key=lambda a: -a["intensity"])
            for a in aus_value:
                active = [s for s in with_aus if s.face.aus.get(a["au"], 0.0) >= AU_ACTIVE_THRESHOLD]  # type: ignore[union-attr]
                start, end, frames = _span(active or with_aus)
                cue = f"{a['au']} {a['name']}, mean intensity {a['intensity']:.1f}"
                evidence.append(Evidence("face", cue, start, end, frames, source, a["intensity"]))
        weights = np.array([max(s.face.quality.score, 0.05) for s in main])
        probs = np.array([[s.face.expression.probabilities.get(e, 0.0) for e in CANONICAL_EMOTIONS] for s in main])
        mean_probs = (weights[:, None] * probs).sum(0) / weights.sum()
        label = CANONICAL_EMOTIONS[int(np.argmax(mean_probs))]
        confidence = float(mean_probs.max())
        face_value = {
            "label": label,
            "confidence": round(confidence, 4),
            "probabilities": {e: round(float(p), 4) for e, p in zip(CANONICAL_EMOTIONS, mean_probs, strict=True)},
            "model": main[0].face.expression.model,
        }
        confidences.append(confidence)
        start, end, frames = _span(main)
        evidence.append(Evidence("face", f"facial expression {label} {confidence:.0%}", start, end, frames, source))

    tone_value = None
    voice = evidence_by.get("voice")
    spoken = _spoken(results)
    if voice is not None:
        seconds = [max(u.end - u.start, 0.05) for _, u in spoken]
        prosodies = [u.prosody for _, u in spoken]
        pitch = _weighted_mean([p.pitch_mean if p else None for p in prosodies], seconds)
        pitch_range = _weighted_mean([p.pitch_range if p else None for p in prosodies], seconds)
        rate = _weighted_mean([p.speaking_rate if p else None for p in prosodies], seconds)
        energy = _weighted_mean([p.energy if p else None for p in prosodies], seconds)
        descriptors = PROSODY_REFERENCE.describe(pitch, pitch_range, rate, energy)
        tone_value = {
            "label": voice.label,
            "confidence": round(voice.confidence, 4),
            "descriptors": descriptors,
            "pitch_mean": _r(pitch, 1),
            "pitch_range": _r(pitch_range, 2),
            "speaking_rate": _r(rate, 2),
            "energy": _r(energy, 1),
        }
        confidences.append(voice.confidence)
        start, end = voice.span or (None, None)
        cue = f"vocal tone {voice.label} {voice.confidence:.0%}" + (
            f"; {', '.join(descriptors)}" if descriptors else ""
        )
        evidence.append(Evidence("voice", cue, start, end))

    words_value: list[dict[str, Any]] = []
    for r, u in _worded(results):
        assert u.text_emotion is not None
        start, end = _utterance_span(u)
        for word, weight in u.text_emotion.salient_words:
            words_value.append(
                {"word": word, "weight": round(float(weight), 4), "emotion": u.text_emotion.emotion.label,
                 "utterance": u.index, "source": r.source, "start": _r(start), "end": _r(end)}
            )  # fmt: skip
    words_value.sort(key=lambda w: -w["weight"])
    words_value = words_value[:MAX_SALIENT_WORDS]
    text = evidence_by.get("text")
    if text is not None and words_value:
        confidences.append(text.confidence)
    for w in words_value:
        cue = f"“{w['word']}” drives {w['emotion']} (+{w['weight']:.2f})"
        evidence.append(Evidence("text", cue, w["start"], w["end"], source=w["source"] if multi else None,
                                 value=w["weight"]))  # fmt: skip
    value = {
        "action_units": aus_value,
        "au_threshold": AU_ACTIVE_THRESHOLD,
        "au_reference": reference,
        "facial_expression": face_value,
        "vocal_tone": tone_value,
        "salient_words": words_value,
    }
    confidence = float(np.mean(confidences)) if confidences else 0.0
    return TreeNode("expressions", value, confidence, tuple(evidence))


def _agreement(evidence: list[ModalityEvidence]) -> tuple[str, list[dict[str, Any]]]:
    """``none``, ``single``, ``agree``, ``mixed`` (labels differ, one of them unsure) or ``conflict``."""
    if not evidence:
        return "none", []
    if len(evidence) == 1:
        return "single", []
    conflicts = [
        {"modalities": [a.modality, b.modality], "labels": [a.label, b.label]}
        for i, a in enumerate(evidence)
        for b in evidence[i + 1 :]
        if a.label != b.label and min(a.confidence, b.confidence) >= CONFLICT_MIN_CONFIDENCE
    ]
    if conflicts:
        return "conflict", conflicts
    return ("agree" if len({e.label for e in evidence}) == 1 else "mixed"), []


def _emotion(fused: FusedEmotion | None, evidence: list[ModalityEvidence]) -> TreeNode:
    agreement, conflicts = _agreement(evidence)
    weights = dict(fused.weights) if fused else {}
    modalities = {
        ev.modality: {
            "label": ev.label,
            "confidence": round(ev.confidence, 4),
            "valence": _r(ev.valence, 4),
            "arousal": _r(ev.arousal, 4),
            "weight": round(float(weights.get(ev.modality, 0.0)), 4),
            "count": ev.count,
        }
        for ev in evidence
    }
    value = {
        "state": fused.state if fused else "uncertain",
        "label": fused.label if fused else None,
        "confidence": round(fused.confidence, 4) if fused else 0.0,
        "probabilities": {k: round(float(v), 4) for k, v in fused.probabilities.items()} if fused else None,
        "valence": round(float(fused.valence), 4) if fused else None,
        "arousal": round(float(fused.arousal), 4) if fused else None,
        "uncertain": fused.uncertain if fused else True,
        "method": fused.method if fused else None,
        "modalities": modalities,
        "agreement": agreement,
        "conflicts": conflicts,
    }
    cues: list[Evidence] = []
    for ev in evidence:
        start, end = ev.span or (None, None)
        cue = f"{_MODALITY_NAMES[ev.modality]}: {ev.label} {ev.confidence:.0%} (weight {weights.get(ev.modality, 0):.2f}; {ev.cue})"
        cues.append(Evidence(ev.modality, cue, start, end, value=round(ev.confidence, 4)))
    by = {ev.modality: ev for ev in evidence}
    for c in conflicts:
        a, b = (by[m] for m in c["modalities"])
        cue = (
            f"conflict: {_MODALITY_NAMES[a.modality]} {_MODALITY_VERBS[a.modality]} {a.label} ({a.confidence:.0%}) "
            f"but {_MODALITY_NAMES[b.modality]} {_MODALITY_VERBS[b.modality]} {b.label} ({b.confidence:.0%})"
        )
        cues.append(Evidence(a.modality, cue, value=c))
    return TreeNode("emotion", value, fused.confidence if fused else 0.0, tuple(cues))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _contains(sentence: str, word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", sentence, re.IGNORECASE) is not None


def _cause(results: list[AnalysisResult], evidence_by: dict[str, ModalityEvidence], multi: bool) -> TreeNode:
    worded = _worded(results)
    text = evidence_by.get("text")
    if not worded or text is None:
        unobserved: dict[str, Any] = {
            "observable": False,
            "emotion": None,
            "basis": "none",
            "trigger_words": [],
            "sentences": [],
        }
        scene = Evidence("scene", "nothing was said or typed: the cause is not observable from the scene alone")
        return TreeNode("cause", unobserved, CAUSE_UNOBSERVED_CONFIDENCE, (scene,))
    dominant = text.label
    candidates = [(r, u) for r, u in worded if u.text_emotion.emotion.label == dominant] or worded  # type: ignore[union-attr]
    words = sorted(
        ((w, float(s), r, u) for r, u in candidates for w, s in u.text_emotion.salient_words),  # type: ignore[union-attr]
        key=lambda t: -t[1],
    )[:CAUSE_TOP_WORDS]
    scored: list[tuple[float, int, str, list[str], AnalysisResult, Utterance]] = []
    order = 0
    for r, u in candidates:
        for sentence in _sentences(u.text or ""):
            hits = [(w, s) for w, s, _, owner in words if owner is u and _contains(sentence, w)]
            if hits:
                scored.append((sum(s for _, s in hits), order, sentence, [w for w, _ in hits], r, u))
            order += 1
    if scored:
        basis, factor = "salient words", 1.0
        chosen = sorted(scored, key=lambda t: (-t[0], t[1]))[:CAUSE_MAX_SENTENCES]
        chosen.sort(key=lambda t: t[1])  # back in reading order
    else:  # no salient word to anchor on: the most confident utterance's text, at half the confidence
        basis, factor = "whole text", 0.5
        r, u = max(candidates, key=lambda ru: ru[1].text_emotion.emotion.confidence)  # type: ignore[union-attr]
        chosen = [(0.0, 0, (u.text or "").strip()[:300], [], r, u)]
    sentences: list[dict[str, Any]] = []
    evidence: list[Evidence] = []
    for _, _, sentence, hit_words, r, u in chosen:
        start, end = _utterance_span(u)
        sentences.append(
            {"text": sentence, "words": hit_words, "utterance": u.index, "source": r.source,
             "start": _r(start), "end": _r(end)}
        )  # fmt: skip
        cue = f"“{sentence}”" + (f" (salient: {', '.join(hit_words)})" if hit_words else "")
        evidence.append(Evidence("text", cue, start, end, source=r.source if multi else None))
    trigger = list(dict.fromkeys(w for s in sentences for w in s["words"]))
    value = {"observable": True, "emotion": dominant, "basis": basis, "trigger_words": trigger, "sentences": sentences}
    return TreeNode("cause", value, text.confidence * factor, tuple(evidence))


def _appraisal(emotion: TreeNode, cause: TreeNode) -> TreeNode:
    label = emotion.value["label"]
    tentative = bool(emotion.value["uncertain"])
    need = EMOTION_NEEDS.get(label, _NO_EMOTION_NEED) if label else _NO_EMOTION_NEED
    value = {"emotion": label, "need": need, "tentative": tentative, "cause_observable": cause.value["observable"]}
    modalities = emotion.value["modalities"]
    # the per-modality cues come first in the emotion node, in ``modalities`` order: cite the weightiest one
    top = max(range(len(modalities)), key=lambda i: list(modalities.values())[i]["weight"], default=None)
    evidence = (
        [] if top is None else [replace(emotion.evidence[top], cue=f"{emotion.evidence[top].cue} → need: {need}")]
    )
    evidence += [e for e in cause.evidence if e.modality == "text"][:1]
    return TreeNode("appraisal", value, emotion.confidence, tuple(evidence))


#: Words a restatement leaves out at the start, when a comma or a subject follows ("Yes, my fiance and I ...", "So I
#: bought ...", not "No one came").
_INTERJECTIONS: Final = frozenset({
    "yes", "yeah", "yep", "yup", "no", "nope", "ok", "okay", "oh", "well", "hmm", "um", "lol", "haha", "so", "but",
    "and", "also", "honestly", "actually", "anyway", "except",
})  # fmt: skip
#: Fillers a restatement leaves out ("I've not been doing great to be honest", "I'm doing alright I suppose").
_FILLERS: Final = re.compile(
    r"(,?)\s*\b(?:to be honest|tbh|honestly|actually|basically|literally|lol|haha|i guess|i suppose)\b\s*(,?)", re.I
)
#: A sentence that starts with one of these leans on another one ("Except ... with this one friend"): not said back.
_SUBORDINATORS: Final = frozenset({
    "except", "unless", "because", "cause", "cuz", "although", "though", "if", "when", "while", "since", "whereas",
})  # fmt: skip
#: Broken grammar a restatement would echo: a subject and a bare "-ing" verb ("my friends avoiding my calls",
#: "... because my friends fighting with me"), "it" run into a new clause ("I can't believe it I just got ...").
_BROKEN: Final = re.compile(
    r"(?:^|\b(?:because|and|but|that|so|when|since|as|cause|cuz)\s+)(?:my|your|his|her|their|our|the)\s+"
    r"(?!\w+ing\b)\w+\s+(?!(?:no|some|any|every)?thing\b|morning\b|evening\b|during\b)\w+ing\b|"
    r"\bit (?:i|you|he|she|they|we)\b",
    re.IGNORECASE,
)
_DASH: Final = re.compile(r"\s+[-–—]+\s+|--")


def said_back(sentence: str) -> str | None:
    """``sentence`` as a restatement may say it back: without a leading "Yes," / "So" (``_INTERJECTIONS``), its
    fillers (``_FILLERS``) and anything after a dash; None when it does not read cleanly: a word outside the English
    word list (a typo: "layed off", "can d"), a fragment that leans on another sentence ("Except ...", "Because
    ..."), or broken grammar (``_BROKEN``)."""
    text = _DASH.split(sentence.strip(), maxsplit=1)[0]
    text = _FILLERS.sub(lambda m: ", " if m.group(2) else " ", text)
    while True:
        m = re.match(r"\s*([A-Za-z]+)\s*([,.!]?)\s*(\S*)", text)
        if not m or m.group(1).lower() not in _INTERJECTIONS:
            break
        following = m.group(3).lower().strip(",.!?").replace("’", "'")
        if not (m.group(2) or following in _SUBJECTS or following in _TO_YOU):
            break
        text = text[m.start(3) :]
    text = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s{2,}", " ", text)).strip(" ,")
    words = _WORD.findall(text)
    if not words or words[0].lower() in _SUBORDINATORS or _BROKEN.search(text) or not reads_as_english(text):
        return None
    if _POINTS_BACK.match(text.replace("’", "'")) or re.search(r"\b\d+$", text):  # or cut at "1.5 weeks"
        return None
    return text[0].upper() + text[1:]


class RulePlanner:
    """The default planner: ``STRATEGY_RULES`` for the emotion, plus a Question first when the emotion is
    uncertain or the modalities conflict, and a Question when nothing says what caused it (at most 3)."""

    name = "esconv-rules"

    def __call__(self, tree: AffectTree) -> list[tuple[str, str, float]]:
        emotion = tree.emotion.value
        label, confidence = emotion["label"], tree.emotion.confidence
        plan: list[tuple[str, str, float]] = []
        if label is None:
            plan.append(("Question", "nothing showed how they feel: ask rather than assume", 1.0))
        elif emotion["uncertain"]:
            plan.append(("Question", "the signals are too weak to name one feeling: ask rather than assume",
                         round(1.0 - confidence, 4)))  # fmt: skip
            if label != "neutral":
                plan.append(("Reflection of feelings", f"tentatively name the likeliest feeling ({label}) and check it",
                             confidence))  # fmt: skip
        else:
            if emotion["agreement"] == "conflict":
                (a, b), (la, lb) = emotion["conflicts"][0]["modalities"], emotion["conflicts"][0]["labels"]
                check = f"{_MODALITY_NAMES[a]} ({la}) and {_MODALITY_NAMES[b]} ({lb}) disagree: check gently"
                plan.append(("Question", check, round(1.0 - confidence / 2, 4)))
            plan.extend((s, why, confidence) for s, why in STRATEGY_RULES.get(label, STRATEGY_RULES["neutral"]))
        if not tree.cause.value["observable"] and all(s != "Question" for s, _, _ in plan):
            plan.append(("Question", "nothing says what happened: invite them to tell", 0.5))
        seen: set[str] = set()
        out = []
        for strategy, why, conf in plan:
            if strategy not in seen:
                seen.add(strategy)
                out.append((strategy, why, conf))
        return out[:_MAX_STRATEGIES]


def _strategy(tree: AffectTree, planner: Planner) -> TreeNode:
    plan = list(planner(tree))
    if not plan:
        raise ValueError(f"planner {_name(planner)} chose no strategy")
    strategies: list[dict[str, Any]] = []
    for strategy, why, confidence in plan:
        if strategy not in ESCONV_STRATEGIES:
            raise ValueError(f"unknown ESConv strategy {strategy!r}; valid: {', '.join(ESCONV_STRATEGIES)}")
        strategies.append(
            {"strategy": strategy, "why": str(why), "confidence": round(float(np.clip(confidence, 0.0, 1.0)), 4)}
        )
    value = {"strategies": strategies, "planner": _name(planner)}
    evidence = tree.appraisal.evidence
    return TreeNode("strategy", value, strategies[0]["confidence"], evidence)


def second_person(sentence: str) -> str | None:
    """What someone said, turned to the second person for a restatement ("I studied so hard" -> "you studied so
    hard"; "I was" -> "you were"), without a leading "But", "And", "So" and the end punctuation; None when it has no
    first-person word, already says "you" (it may address the assistant), says "we" (turned, it would speak as the
    person) or is a question: such a sentence is quoted instead."""
    found = list(_WORD.finditer(sentence))
    words = [m.group(0).lower().replace("’", "'") for m in found]
    if not any(w in _TO_YOU for w in words) or any(w in _SECOND or w in _PLURAL for w in words):
        return None
    if sentence.rstrip().endswith("?") or words[0] in _QUESTION_STARTS:  # "you're saying that was he ..." is not
        return None
    out: list[str] = []
    last, previous = 0, ("", "")
    for m, key in zip(found, words, strict=True):
        after_i = key == "am" or "i" in previous  # "I dislike it but am unsure"; "I really wasn't"
        new = _TO_YOU.get(key) or (_AFTER_I[key] if key in _AFTER_I and after_i else m.group(0))
        out.append(sentence[last : m.start()] + new)
        last, previous = m.end(), (*previous[-1:], key)
    text = ("".join(out) + sentence[last:]).strip().rstrip(".!?…,;: ")
    first = _WORD.match(text)
    if first and first.group(0).lower() in _OPENERS:
        text = text[first.end() :].lstrip(" ,")
    return text[0].lower() + text[1:] if text else None


def as_statement(sentence: str) -> str | None:
    """A statement without "I" said back as it is ("They are all male and he is the golden child anyway" -> "they
    are all male and he is the golden child anyway"), without a leading "But", "And", "So" and the end punctuation;
    None when it speaks of us or of "we", is a question, or starts with a name (its capital cannot be lowered)."""
    words = [w.lower().replace("’", "'") for w in _WORD.findall(sentence)]
    if not words or any(w in _SECOND or w in _PLURAL or w in _TO_YOU for w in words):
        return None
    if sentence.rstrip().endswith("?") or words[0] in _QUESTION_STARTS:
        return None
    text = sentence.strip().rstrip(".!?…,;: ")
    first = _WORD.match(text)
    if first and first.group(0).lower() in _OPENERS:
        text = text[first.end() :].lstrip(" ,")
    head = text.split(" ", 1)[0].lower().strip(",") if text else ""
    if head not in _SUBJECTS or len(text.split()) < MIN_STATEMENT_WORDS:  # "the other day" is not a statement
        return None
    return text[0].lower() + text[1:]


def _reads_cleanly(restated: str) -> bool:
    """A paraphrase that starts with a subject (``_SUBJECTS``), with no word twice in a row ("and and") and no stray
    quote mark ("you"ve")."""
    words = restated.lower().replace("’", "'").split()
    return (
        bool(words)
        and words[0].strip(",") in _SUBJECTS
        and all(a != b for a, b in pairwise(words))
        and '"' not in restated
    )


def _restatement(cause: dict[str, Any]) -> str | None:
    """The restatement of the cause: its most salient sentence that may be said back (``said_back``), turned to
    "you" ("If I understand you right, you're saying that you ...") or, without "I", said as it is ("... that they
    ..."); None when no sentence may be (a fragment under ``MIN_QUOTE_WORDS`` words, a long run-on, a typo). A
    paraphrase that the reply checks would refuse (the person's own harsh words about themselves, now without
    quotes) is quoted instead, so the words stay theirs."""
    found = cause["sentences"] if cause["observable"] else []
    # the sentence with the most salient words first (reading order among equals), each as it may be said back
    ranked = sorted(found, key=lambda s: -len(s.get("words", [])))
    for sentence in (t for t in (said_back(str(s["text"])) for s in ranked) if t):
        restated = second_person(sentence) or as_statement(sentence)
        if not (
            restated and MIN_QUOTE_WORDS <= len(restated.split()) <= MAX_PARAPHRASE_WORDS and _reads_cleanly(restated)
        ):
            continue
        text = RESTATEMENT_TEMPLATE.format(restated=restated)
        if restated.startswith("that "):  # not "you're saying that that was ..."
            text = text.replace(" that that ", " that ", 1)
        if not check_reply(text):
            return text
        if len(sentence.split()) > MAX_QUOTE_WORDS:  # a long run-on quoted back reads as a machine
            return None
        quote = sentence if len(sentence) <= 120 else sentence[:117].rstrip() + "…"
        return REPLY_TEMPLATES["Restatement or Paraphrasing"].format(quote=quote.rstrip(".!?"))
    return None


def greeting_kind(words: str, earlier: bool = False) -> str | None:
    """The ``GREETING_REPLIES`` key for ``words`` that are only a greeting ("Hi!", "Hello. How are you today?"),
    ``earlier``: the person has spoken before in this conversation; None for anything else."""
    # a greeting with a name ("Hello Christina"): the name left out
    words = re.sub(rf"^\s*((?i:{_GREET}))[,!.]?\s+[A-Z][a-z]+\s*[!.,]*\s*$", r"\1", words)
    said = " ".join(re.findall(r"[a-z']+", words.lower().replace("’", "'")))
    only_you = said in {"you", "u", "and you", "and u"}  # "You?": asking how we are
    if not said or not (only_you or _GREETING_ONLY.fullmatch(said)):
        return None
    asks = only_you or re.search(_HOW_ARE_YOU, said) is not None
    if earlier:
        return "asking how we are" if asks else "greeting again"
    return "greeting, asking how we are" if asks else "greeting"


def _top_positive(fine: Mapping[str, float] | None) -> str | None:
    """The strongest positive (``GLADNESS``) label in the words' GoEmotions labels ``fine``; None without them (or
    when none of them has any probability)."""
    if not fine:
        return None
    top = max(GLADNESS, key=lambda label: float(fine.get(label, 0.0)))
    return top if float(fine.get(top, 0.0)) > 0.0 else None


def gladness(fine: Mapping[str, float] | None) -> str:
    """The ``GLADNESS`` kind of the strongest positive label in the words' GoEmotions labels ``fine``; "good news"
    without words (a smiling face). A gladness other than thanks must outweigh the negative labels together, else
    it is "hard news" ("It's going to be nearly impossible to find something good now" reads optimism 0.31 beside
    0.50); good news outweighed by less than ``HARD_NEWS_RATIO`` times is mixed, "acknowledgement" ("I'm feeling
    very overwhelmed" reads excitement 0.11 beside nervousness and disappointment 0.13)."""
    top = _top_positive(fine)
    if not top or not fine:
        return "good news"
    kind, weight, negative = GLADNESS[top], float(fine.get(top, 0.0)), negative_weight(fine)
    if kind == "thanks" or weight >= negative:
        return kind
    if kind == "good news" and negative < HARD_NEWS_RATIO * weight:  # mixed news ("That's the good part. I know
        return "acknowledgement"  # feeling sad is natural ..."): acknowledged
    return "hard news"


def negative_weight(fine: Mapping[str, float] | None) -> float:
    """The negative GoEmotions labels (``NEGATIVE_FINE``) of ``fine`` together; 0 without labels."""
    return sum(float(fine.get(n, 0.0)) for n in NEGATIVE_FINE) if fine else 0.0


def _words_fine(results: list[AnalysisResult]) -> dict[str, float] | None:
    """The GoEmotions labels of the moment's words, averaged over its utterances; None without words."""
    fines = [u.text_emotion.fine for _, u in _worded(results) if u.text_emotion is not None and u.text_emotion.fine]
    if not fines:
        return None
    return {label: float(np.mean([f.get(label, 0.0) for f in fines])) for label in fines[0]}


def _template_reply(
    tree: AffectTree,
    words: str = "",
    fine: Mapping[str, float] | None = None,
    words_label: str | None = None,
    history: Sequence[str] = (),
) -> tuple[str, str | None, list[str]]:
    """(reply, its kind, the strategies it used): one sentence per strategy in ``_REPLY_ORDER`` (reflect, restate, reassure, suggest or
    inform, ask); Self-disclosure is skipped: there is nothing true to disclose. ``words`` that are only a greeting
    are greeted back instead (kind: the ``GREETING_REPLIES`` key); a happy reading's sentences follow its
    ``gladness`` in the words' GoEmotions labels ``fine`` when the words themselves (``words_label``) read happiness
    (a smile beside words of surprise is not told it sounds hopeful; kind: the gladness), and a neutral reading of
    words whose negative labels reach ``HARD_NEWS_NEGATIVE`` is hard news; what they asked of us is met first
    (``_openers``); a feeling question is not asked right after they said how they feel, nor before anything was
    told (``TELL_ME_WHAT_HAPPENED`` instead); advice asked for gets the topic's suggestion, from the words or the
    person's earlier turns ``history``. The rounds that shaped these rules, each checked by a blind read of unread
    ESConv turns: ``docs/dialogue-replies.md``."""
    words = words.replace("’", "'")
    greeting = greeting_kind(words, earlier=bool(history))
    strategies = [s["strategy"] for s in tree.strategy.value["strategies"]]
    if greeting:
        return GREETING_REPLIES[greeting], greeting, strategies
    emotion, cause = tree.emotion.value, tree.cause.value
    label = emotion["label"]
    uncertain = emotion["uncertain"]
    conflict = emotion["agreement"] == "conflict"
    restatement = _restatement(cause)
    glad_fine = fine if words_label == "happiness" else None
    top_glad = _top_positive(glad_fine) if label == "happiness" else None
    glad = gladness(glad_fine) if label == "happiness" else None
    if glad == "thanks" and not _THANKS.search(words):  # the gratitude label alone is not thanks
        glad = "acknowledgement"
    elif glad == "thanks" and len(_THANKS.sub(" ", words).split()) >= THANKS_AND_MORE_WORDS:
        glad = "thanks, and more"
    elif glad and glad != "hard news" and _GLAD_OF_US.search(words):
        glad = "glad we're talking"
    elif label == "neutral" and words_label == "neutral" and negative_weight(fine) >= HARD_NEWS_NEGATIVE:
        glad = "hard news"  # not a gladness: the neutral reading's reassurance
    said_how = _SAID_HOW_THEY_ARE.search(words) is not None or (
        len(words.split()) <= SHORT_STATE_WORDS and _STATE.search(words) is not None
    )
    sentences, asked_about_us = _openers(words)
    if glad == "glad we're talking":
        sentences.append(GLAD_TO_BE_HERE)
    if "Providing Suggestions" in strategies and CANNOT_KNOW in sentences:  # the suggestion offers to think it through
        sentences[sentences.index(CANNOT_KNOW)] = CANNOT_KNOW_SHORT
    asked_for_advice = _ASKS_FOR_ADVICE.search(words) is not None
    if asked_for_advice and "Providing Suggestions" not in strategies:
        strategies = [*strategies, "Providing Suggestions"]  # asked for advice: a suggestion
    # asked for advice: a general suggestion for the topic, if one is named (else the generic offer)
    advice = suggestion_for(words, history) if asked_for_advice else None
    asked_for_help = HERE_FOR_YOU in sentences
    for strategy in sorted(strategies, key=_REPLY_ORDER.index):
        if strategy == "Self-disclosure":
            continue
        if strategy == "Reflection of feelings":
            feeling = (
                (_GLAD_FEELINGS[top_glad] if glad == GLADNESS[top_glad] else None)
                if top_glad
                else _FEELINGS.get(label or "")
            )
            if not feeling:
                continue
            sentence = REPLY_TEMPLATES[strategy].format(feeling=feeling)
            if uncertain or conflict:  # a guess: say so, and check it unless a question follows anyway
                sentence = f"I may be reading this wrong, but it sounds like you might be feeling {feeling}."
                if "Question" not in strategies:
                    sentence += " Is that right?"
        elif strategy == "Restatement or Paraphrasing":
            if not restatement or asked_about_us or {CANNOT_KNOW, CANNOT_KNOW_SHORT} & set(sentences):  # answered
                continue
            sentence = restatement
        elif strategy == "Affirmation and Reassurance":
            if glad in _GLAD_SENTENCES:
                sentence = _GLAD_SENTENCES[glad][0]
            else:
                sentence = _REASSURANCE.get(label or "", REPLY_TEMPLATES[strategy])
            # nothing told yet to be "a lot"; or the experience answer already said many people feel this way
            if (asked_for_help or asked_about_us) and sentence == REPLY_TEMPLATES[strategy]:
                continue
        elif strategy == "Question":
            if conflict:
                sentence = _QUESTIONS["conflict"]
            elif label is None or uncertain:
                sentence = _QUESTIONS["uncertain"] if cause["observable"] else _QUESTIONS["unobserved"]
            elif not cause["observable"]:
                sentence = _QUESTIONS["unobserved"]
            elif glad in _GLAD_SENTENCES:
                sentence = _GLAD_SENTENCES[glad][1]
            else:
                sentence = _QUESTIONS.get(label, REPLY_TEMPLATES[strategy])
            generic = sentence in _FEELING_QUESTIONS or (asked_for_help and sentence == REPLY_TEMPLATES[strategy])
            if (said_how or asked_for_help) and generic:  # said already, or nothing told yet: what has happened?
                sentence = TELL_ME_WHAT_HAPPENED
        elif strategy == "Providing Suggestions" and advice:
            sentence = advice[1]
        else:
            sentence = REPLY_TEMPLATES[strategy]
            if asked_for_help and strategy == "Others":  # "I'm here for you, and I'm listening." said it already
                continue
        if sentence not in sentences:
            sentences.append(sentence)
    return " ".join(sentences) or REPLY_TEMPLATES["Others"], glad, strategies


def _reply(tree: AffectTree, text: str, kind: str | None, strategies: list[str]) -> TreeNode:
    """The reply node of ``_template_reply``'s reply, its kind and the strategies it used (a request for advice adds
    the suggestion to the planned ones)."""
    value: dict[str, Any] = {"strategies": strategies, "template": text}
    if kind:
        value["kind"] = kind
    return TreeNode("reply", value, tree.strategy.confidence, tree.strategy.evidence, text, "template")


# ---- template prose -------------------------------------------------------------------------------------------


def _rationale(emotion: TreeNode) -> str:
    v = emotion.value
    modalities = v["modalities"]
    if v["label"] is None:
        return "Nothing to read an emotion from: no face, voice or words were found."
    if v["uncertain"]:
        head = (
            f"No single emotion is clear enough to name: the likeliest, {v['label']}, has only {v['confidence']:.0%}."
        )
    else:
        # "mostly from": the heaviest modality that itself reads the fused label (none: the pooled evidence)
        backing = [m for m in modalities if modalities[m].get("label") == v["label"]]
        top = max(backing, key=lambda m: modalities[m]["weight"]) if len(modalities) > 1 and backing else None
        head = f"{v['label'].capitalize()} ({v['confidence']:.0%})" + (
            f", mostly from {_MODALITY_NAMES[top]}."
            if top
            else "."
            if len(modalities) == 1 or backing
            else ", from the modalities pooled: none of them reads it on its own."
        )
    if v["agreement"] == "single":
        (only,) = modalities
        tail = f" Only {_MODALITY_NAMES[only]} could be read."
    elif v["agreement"] == "agree":
        tail = " " + " and ".join(_MODALITY_NAMES[m] for m in modalities).capitalize() + " agree."
    elif v["agreement"] == "conflict":
        c = v["conflicts"][0]
        (a, b), (la, lb) = c["modalities"], c["labels"]
        tail = (
            f" {_MODALITY_NAMES[a].capitalize()} {_MODALITY_VERBS[a]} {la} while {_MODALITY_NAMES[b]}"
            f" {_MODALITY_VERBS[b]} {lb}: the signals differ, which is itself worth noticing."
        )
    elif v["agreement"] == "mixed":
        tail = " The modalities lean different ways, but only one of them is sure."
    else:
        tail = ""
    return head + tail


def _cause_text(cause: TreeNode) -> str:
    v = cause.value
    if not v["observable"]:
        return "The cause is not observable from the scene alone: nothing was said or typed."
    quote = " ".join(f"“{s['text']}”" for s in v["sentences"])
    if v["basis"] == "whole text":
        return f"The {v['emotion']} in the words likely concerns what they said: {quote}"
    return f"The {v['emotion']} seems to come from what they said: {quote}"


def _appraisal_text(appraisal: TreeNode) -> str:
    v = appraisal.value
    if v["emotion"] is None:
        return f"They likely need {v['need']}."
    prefix = "Tentatively, as the emotion is uncertain: what" if v["tentative"] else "What"
    return f"{prefix} they likely need: {v['need']} (the usual need with {v['emotion']})."


def _strategy_text(strategy: TreeNode) -> str:
    return " Then ".join(f"{s['strategy']}: {s['why']}." for s in strategy.value["strategies"])


# ---- the builder ----------------------------------------------------------------------------------------------


def _name(part: object) -> str:
    return str(getattr(part, "name", None) or getattr(part, "__name__", None) or type(part).__name__)


def _apply_writer(
    tree: AffectTree,
    writer: TreeWriter,
    warnings: list[str],
    results: Sequence[AnalysisResult],
    check_in_text: str | None = None,
) -> AffectTree:
    """The writer's prose in the nodes' texts. Its reply is ignored when the safety module set the reply
    (``tree.safety["reply_overridden"]``), refused when it fails ``check_reply``, and gets ``check_in_text``
    appended (the concern check-in)."""
    name = _name(writer)
    locked = bool(tree.safety and tree.safety["reply_overridden"])
    try:
        texts = writer.write(tree, results)
    except Exception as exc:  # an LM failing must not take the structured tree with it
        logger.warning("tree writer %s failed: %s", name, exc, exc_info=True)
        warnings.append(f"writer {name} failed ({type(exc).__name__}: {exc}); template texts kept")
        return tree
    if not isinstance(texts, Mapping):
        warnings.append(f"writer {name} returned {type(texts).__name__}, not a mapping; template texts kept")
        return tree
    for key, text in texts.items():
        if key not in WRITER_KEYS:
            logger.warning("tree writer %s returned unknown key %r (known: %s)", name, key, ", ".join(WRITER_KEYS))
            continue
        if not isinstance(text, str) or not text.strip():
            warnings.append(f"writer {name} gave no usable {key} text; template kept")
            continue
        text = text.strip()
        if key == "reply":
            if locked:
                level = tree.safety["level"] if tree.safety else "?"
                logger.warning("tree writer %s: reply ignored, the safety reply stands (%s)", name, level)
                warnings.append(f"writer {name}'s reply ignored: the safety module's reply stands ({level})")
                continue
            problems = check_reply(text)
            if problems:
                warnings.append(
                    f"writer {name}'s reply failed the safety check ({'; '.join(problems)}); template reply kept"
                )
                continue
            if check_in_text and check_in_text not in text:
                text = f"{text} {check_in_text}"
        node = getattr(tree, WRITER_KEYS[key])
        tree = tree.replace_node(node.with_text(text, f"lm:{name}"))
    return tree


# ---- safety ---------------------------------------------------------------------------------------------------


def _moment_words(results: list[AnalysisResult]) -> tuple[str, list[tuple[int, AnalysisResult, Utterance]]]:
    """Every utterance's text, joined by newlines (what the safety module reads), and where each one starts."""
    pieces: list[str] = []
    starts: list[tuple[int, AnalysisResult, Utterance]] = []
    offset = 0
    for r in results:
        for u in r.utterances:
            if u.text and u.text.strip():
                starts.append((offset, r, u))
                pieces.append(u.text)
                offset += len(u.text) + 1
    return "\n".join(pieces), starts


def _safety_evidence(
    risk: RiskAssessment, starts: list[tuple[int, AnalysisResult, Utterance]], multi: bool
) -> tuple[Evidence, ...]:
    """The risk's cues as evidence: the utterance each phrase is in (its time span; ``value`` holds the rule and
    the character span in that utterance's text), or the earlier turn it came from."""
    out: list[Evidence] = []
    for cue in risk.cues:
        what = f"“{cue.phrase}” ({cue.category.replace('_', ' ')}, {cue.strength})"
        if cue.turn is not None:
            value = {"rule": cue.rule, "turn": cue.turn, "start": cue.start, "end": cue.end}
            out.append(Evidence("dialogue", f"earlier turn {cue.turn}: {what}", value=value))
            continue
        owner = [(offset, r, u) for offset, r, u in starts if offset <= cue.start]
        if not owner:
            continue
        offset, r, u = owner[-1]
        start, end = _utterance_span(u)
        value = {"rule": cue.rule, "utterance": u.index, "start": cue.start - offset, "end": cue.end - offset}
        out.append(Evidence("text", what, start, end, source=r.source if multi else None, value=value))
    return tuple(out)


def _safety_nodes(
    risk: RiskAssessment, plan: tuple[tuple[str, str], ...], reply: str, evidence: tuple[Evidence, ...]
) -> tuple[TreeNode, TreeNode]:
    """The strategy node (the plan, each why led by the risk's why) and the reply node (``text_source="safety"``)."""
    strategies = [
        {"strategy": strategy, "why": f"{risk.why} {role[0].upper()}{role[1:]}.", "confidence": risk.score}
        for strategy, role in plan
    ]
    value = {"strategies": strategies, "planner": "safety"}
    text = "Safety plan. " + risk.why + " " + " Then ".join(f"{s}: {role}." for s, role in plan)
    strategy = TreeNode("strategy", value, risk.score, evidence, text, "template")
    names = [s for s, _ in plan]
    return strategy, TreeNode("reply", {"strategies": names, "template": reply}, risk.score, evidence, reply, "safety")


def _checked_reply(tree: AffectTree, warnings: list[str]) -> AffectTree:
    """The last gate: a reply that fails ``check_reply`` becomes the plainest template (never expected)."""
    problems = check_reply(tree.reply.text or "")
    if not problems:
        return tree
    logger.warning("reply failed the safety check (%s); replaced", "; ".join(problems))
    warnings.append(
        f"the reply failed the safety check ({'; '.join(problems)}); replaced by {REPLY_TEMPLATES['Others']!r}"
    )
    return tree.replace_node(tree.reply.with_text(REPLY_TEMPLATES["Others"], "template"))


def build_tree(
    results: AnalysisResult | Iterable[AnalysisResult],
    fused: FusedEmotion | None = None,
    fuser: Fuser | None = None,
    writer: TreeWriter | None = None,
    *,
    planner: Planner | None = None,
    safety: RiskDetector | None = None,
    history: Sequence[str] = (),
    locale: str | None = None,
) -> AffectTree:
    """The affective tree of one moment seen through ``results`` (one result, several parts of the same moment,
    or a multimodal result, whose parts are read).

    ``fused`` is the fused emotion when the caller already has it; otherwise ``fuser`` (default:
    ``default_fuser()``) pools ``fusion.late.collect_evidence(results)``. ``planner`` chooses the strategies
    (default ``RulePlanner()``); ``writer`` writes the prose of cause, appraisal, rationale and reply.
    ``safety`` (default ``RiskDetector()``) assesses the words, with ``history`` (the user's earlier turns, oldest
    first); ``locale`` (e.g. ``"en_GB"``) picks the emergency number and crisis line of a crisis reply (all the
    listed regions when ``None``).

    Raises:
        ValueError: no result given, or the planner chose an unknown strategy or none.
    """
    flat = _flatten(results)
    if not flat:
        raise ValueError("build_tree needs at least one AnalysisResult")
    multi = len(flat) > 1
    warnings: list[str] = []
    evidence = collect_evidence(flat)
    evidence_by: dict[str, ModalityEvidence] = {ev.modality: ev for ev in evidence}
    models: dict[str, str | None] = {}
    if fused is None and evidence:
        if fuser is None:
            fuser = default_fuser()
        fused = fuser(evidence, flat)
        if isinstance(fuser, LateFusion) and fuser.config.fitted_on == _UNTRAINED:
            warnings.append("emotion fused with the untrained late-fusion prior (no fitted parameters were found)")
    if fused is None:
        warnings.append("no face, voice or words found: no emotion to fuse")
    models["fuser"] = _name(fuser) if fuser is not None else (fused.method if fused is not None else None)
    planner = planner if planner is not None else RulePlanner()
    models["planner"] = _name(planner)
    models["writer"] = _name(writer) if writer is not None else None
    detector = safety if safety is not None else RiskDetector()
    models["safety"] = _name(detector)
    words, starts = _moment_words(flat)
    risk = detector.assess(words, history)

    main = _main_face(flat)
    emotion = _emotion(fused, evidence)
    cause = _cause(flat, evidence_by, multi)
    tree = AffectTree(
        attributes=_attributes(flat, main, multi),
        expressions=_expressions(flat, main, evidence_by, multi),
        emotion=emotion.with_text(_rationale(emotion), "template"),
        cause=cause.with_text(_cause_text(cause), "template"),
        appraisal=_appraisal(emotion, cause),
        strategy=TreeNode.pending("strategy"),
        reply=TreeNode.pending("reply"),
        sources=tuple((r.source, r.kind) for r in flat),
        models=models,
    )
    tree = tree.replace_node(tree.appraisal.with_text(_appraisal_text(tree.appraisal), "template"))
    # Attachment is answered on the turn that says it; a cue carried from an earlier turn does not repeat it.
    attachment = any(c.category == "attachment" and c.turn is None for c in risk.cues)
    check_in_text = None
    if risk.level == "crisis" or attachment or after_crisis(risk):
        crisis = risk.level == "crisis"
        if crisis:
            text, plan = crisis_reply(risk, locale), SAFETY_PLAN
        elif attachment:
            text, plan = boundary_reply(), BOUNDARY_PLAN
            if set(risk.categories) - {"attachment"}:  # a concern beside the attachment
                rest = tuple(c for c in risk.categories if c != "attachment")
                text = f"{text} {check_in(replace(risk, categories=rest))}"
        else:
            since = len(history) - (disclosure_turn(risk) or 0)
            text, plan = follow_up_reply(risk, locale, turns_since=since), FOLLOW_UP_PLAN
        strategy, reply = _safety_nodes(risk, plan, text, _safety_evidence(risk, starts, multi))
        tree = tree.replace_node(strategy).replace_node(reply)
    else:
        strategy = _strategy(tree, planner)
        tree = tree.replace_node(strategy.with_text(_strategy_text(strategy), "template"))
        # the words' kind of gladness shapes a happy reply only when the words themselves read happiness (a smile
        # beside words of surprise is not told it sounds hopeful)
        words_label = evidence_by["text"].label if "text" in evidence_by else None
        said = _template_reply(tree, words, _words_fine(flat), words_label, history)
        reply = _reply(tree, *said)
        if risk.level == "concern":
            check_in_text = check_in(risk)
            text = f"{reply.text} {check_in_text}"
            reply = replace(reply, value={**reply.value, "template": text}, text=text)
        tree = tree.replace_node(reply)
    overridden = tree.reply.text_source == "safety"
    tree = replace(tree, safety={**risk.to_dict(), "reply_overridden": overridden})
    if risk.level != "none":
        logger.info("safety: %s", risk.why)
    if writer is not None:
        tree = _apply_writer(tree, writer, warnings, flat, check_in_text)
    tree = _checked_reply(tree, warnings)
    return replace(tree, warnings=tuple(warnings))

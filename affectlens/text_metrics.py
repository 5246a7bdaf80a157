"""Reply-quality metrics against reference texts: corpus BLEU, ROUGE-L and Distinct-n (``affectlens eval dialogue``).

Texts are lower-cased and split into words and punctuation marks (``tokenize``); no external package is used.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"I'm fine."`` -> ``["i", "'", "m", "fine", "."]``."""
    return _TOKEN.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of ``tokens`` in order (none when there are fewer than ``n`` tokens)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 2) -> float:
    """Corpus-level BLEU-``max_n`` with one reference per hypothesis (Papineni et al. 2002), unsmoothed.

    Clipped n-gram matches and hypothesis n-grams are summed over the corpus for n = 1..``max_n``; the score is the
    geometric mean of those precisions (uniform weights) times the brevity penalty ``exp(1 - r / c)`` when the
    hypotheses are shorter in total (``c`` tokens) than the references (``r``). Any zero precision gives 0.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        hyp, ref = tokenize(hypothesis), tokenize(reference)
        hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
        for n in range(1, max_n + 1):
            hyp_counts, ref_counts = Counter(ngrams(hyp, n)), Counter(ngrams(ref, n))
            matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
            totals[n - 1] += sum(hyp_counts.values())
    if hyp_len == 0 or any(m == 0 for m in matches):
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals, strict=True)) / max_n
    brevity = 1.0 if hyp_len >= ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (dynamic programming, O(len(a)·len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    """ROUGE-L F1 of one pair: LCS precision (over the hypothesis) and recall (over the reference), their harmonic
    mean; 0 when either text has no tokens."""
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    lcs = lcs_length(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean_rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """ROUGE-L F1 averaged over the pairs (0 for no pairs)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    scores = [rouge_l(h, r) for h, r in zip(hypotheses, references, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-``n`` (Li et al. 2016): unique ``n``-grams over all ``texts`` / all their ``n``-grams (0 if none)."""
    grams = [g for text in texts for g in ngrams(tokenize(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-2, mean ROUGE-L F1 and Distinct-1/2 of ``hypotheses`` against ``references``, rounded to 4 places."""
    return {
        "bleu_2": round(corpus_bleu(hypotheses, references, 2), 4),
        "rouge_l": round(mean_rouge_l(hypotheses, references), 4),
        "distinct_1": round(distinct_n(hypotheses, 1), 4),
        "distinct_2": round(distinct_n(hypotheses, 2), 4),
    }

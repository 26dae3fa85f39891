"""Word error rate: word edit distance over the reference's length, after the same normalisation of both
sides (lower case, no punctuation, numbers as English words)."""
from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """English words of 0 <= n < 1,000,000 (both sides of a comparison get the same spelling)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    return number_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_words(n % 1000))


def normalise(text: str) -> list[str]:
    """Lower case, no punctuation (apostrophes and hyphens too), numbers as words."""
    text = re.sub(r"[^\w\s]", " ", text.lower().replace("'", "").replace("’", ""))
    words = []
    for w in text.split():
        words += number_words(int(w)).split() if w.isdigit() and int(w) < 1_000_000 else [w]
    return words


def wer(reference: str, hypothesis: str) -> float:
    """Word edit distance (substitutions, insertions, deletions) over the reference's word count."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))

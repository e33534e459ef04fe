"""Whether a system's translations are degenerate: too little of a translation for a
significance test between it and another system to mean anything.

A model stopped long before it produces text prints the same few strings for
every sentence (``....``, ``indeindeinde``); resampling test sentences between
two such systems measures nothing a reader wants, however small its p-value.
:func:`degenerate_reasons` names what is wrong with a system's translations, one
reason per rule that holds (none: not degenerate):

- sacreBLEU below :data:`MIN_SACREBLEU`;
- fewer distinct translations than :data:`MIN_DISTINCT_SHARE` of the sentences;
- more than :data:`MAX_REPETITIVE_SHARE` of the translations repetitive: empty, or
  one token making up half of four or more tokens, or a word that is one piece
  of at most 10 characters repeated three times or more;
- far more repetition than the references: the share of tokens that repeat an
  earlier token of their own sentence above :data:`MAX_REPEATED_TOKENS` and over
  :data:`REPETITION_FACTOR` times the references' share.

The thresholds are this package's, chosen so that fairseq's Post-LN after the
demo's 600 updates (sacreBLEU about 4) passes and the same model after 20 updates
does not; so does a 6+6 Post-LN after 600 updates on English→French (sacreBLEU
3-5, up to half its tokens repeats). They flag a model that does not translate,
not a weak one.
"""

import re
from collections import Counter
from typing import Dict, List, Optional, Sequence

MIN_SACREBLEU = 1.0
MIN_DISTINCT_SHARE = 0.25
MAX_REPETITIVE_SHARE = 0.5
MAX_REPEATED_TOKENS = 0.6
REPETITION_FACTOR = 3.0
_REPEATED_PIECE = re.compile(r"(.{1,10}?)\1{2,}")


def is_repetitive(sentence: str) -> bool:
    """Empty, one token half of four or more, or a word of one piece repeated (``indeinde``
    counts from three pieces: ``indeindeinde``)."""
    tokens = sentence.split()
    if not tokens:
        return True
    if len(tokens) >= 4 and Counter(tokens).most_common(1)[0][1] * 2 >= len(tokens):
        return True
    return any(len(word) >= 6 and _REPEATED_PIECE.fullmatch(word) for word in tokens)


def repeated_token_share(sentences: Sequence[str]) -> float:
    """The share of tokens that repeat an earlier token of their own sentence."""
    tokens = repeats = 0
    for sentence in sentences:
        words = sentence.split()
        tokens += len(words)
        repeats += len(words) - len(set(words))
    return repeats / tokens if tokens else 0.0


def degenerate_reasons(translations: Sequence[str], references: Sequence[str],
                       sacrebleu: Optional[float] = None) -> List[str]:
    """What makes ``translations`` degenerate, one phrase per rule of the module that holds;
    empty when none does. ``sacrebleu``: the system's score, if known."""
    n = len(translations)
    reasons = []
    if sacrebleu is not None and sacrebleu < MIN_SACREBLEU:
        reasons.append(f"sacreBLEU {sacrebleu:.2f} is below {MIN_SACREBLEU:g}")
    if n == 0:
        return reasons + ["no translations"]
    distinct = len(set(translations))
    if distinct < MIN_DISTINCT_SHARE * n:
        reasons.append(f"{distinct} distinct translation{'s' if distinct != 1 else ''} "
                       f"of {n} sentences")
    repetitive = sum(map(is_repetitive, translations))
    if repetitive > MAX_REPETITIVE_SHARE * n:
        reasons.append(f"{repetitive} of {n} translations empty or one token repeated")
    share, reference_share = repeated_token_share(translations), repeated_token_share(references)
    if share > MAX_REPEATED_TOKENS and share > REPETITION_FACTOR * reference_share:
        reasons.append(f"{100 * share:.0f} % of the tokens repeat one of their sentence "
                       f"(references: {100 * reference_share:.0f} %)")
    return reasons


def degenerate_systems(texts: Dict[str, Sequence[str]], references: Sequence[str],
                       scores: Dict[str, Optional[float]]) -> Dict[str, List[str]]:
    """``{role: reasons}`` of the systems in ``texts`` that are degenerate."""
    found = {role: degenerate_reasons(lines, references, scores.get(role))
             for role, lines in texts.items()}
    return {role: reasons for role, reasons in found.items() if reasons}


def describe(degenerate: Dict[str, List[str]]) -> str:
    """``baseline: sacreBLEU 0.02 is below 1, 1 distinct translation of 1000 sentences``
    for each degenerate system, ``; ``-separated."""
    return "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in degenerate.items())

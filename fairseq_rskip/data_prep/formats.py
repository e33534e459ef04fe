"""Parsers for the raw formats the benchmarks ship in.

- IWSLT XML test sets (``IWSLT14.TED.tst2010.de-en.de.xml``) and WMT SGML test
  sets (``newstest2014-deen-src.de.sgm``): one ``<seg id="N">text</seg>`` per line.
- IWSLT tagged training files (``train.tags.de-en.de``): one sentence a line,
  with talk metadata lines in tags.
- Plain text (Europarl, CommonCrawl, News Commentary, the Stanford En-Vi files).

The rules are those of fairseq's prepare-iwslt14.sh / prepare-wmt14en2de.sh,
written in Python instead of grep and sed.
"""

import re

from fairseq_rskip.data_prep.text import is_blank, iter_lines
from fairseq_rskip.errors import UserError

_SEG = re.compile(r"<seg\b[^>]*>\s*(.*?)\s*</seg>", re.IGNORECASE)
# fairseq's IWSLT'14 recipe: drop these metadata lines, unwrap title and description
_TAG_LINES = ("<url>", "<talkid>", "<keywords>")
_UNWRAP = re.compile(r"</?(title|description)>")


def parse_segments(path):
    """Return the segments of an IWSLT .xml or WMT .sgm file, in file order.

    Like ``grep '<seg id' | sed ...`` in fairseq's recipes, plus the
    recipes' replacement of the right single quotation mark by an apostrophe.
    """
    segs = []
    for n, line in iter_lines(path):
        if "<seg" not in line.lower():
            continue
        m = _SEG.search(line)
        if m is None:
            raise UserError(f"{path}:{n}: malformed <seg> line (no closing </seg> on the same line)")
        segs.append(m.group(1).replace("\u2019", "'"))
    if not segs:
        raise UserError(f"{path}: no <seg> elements found; is this an IWSLT .xml or WMT .sgm file?")
    return segs


def parse_tagged(path):
    """Return the sentences of an IWSLT ``train.tags.*`` file (metadata lines removed)."""
    out = []
    for _, line in iter_lines(path):
        if any(tag in line for tag in _TAG_LINES):
            continue
        out.append(_UNWRAP.sub("", line))
    return out


def parse_plain(path):
    return [line for _, line in iter_lines(path)]


def pair_up(src_lines, tgt_lines, what, drop_empty=True):
    """Zip two sides of a corpus; their lengths must agree. Returns (pairs, number of empty pairs dropped)."""
    if len(src_lines) != len(tgt_lines):
        raise UserError(
            f"{what}: source and target have different line counts ({len(src_lines)} vs {len(tgt_lines)})"
        )
    pairs, dropped = [], 0
    for a, b in zip(src_lines, tgt_lines):
        if drop_empty and (is_blank(a) or is_blank(b)):
            dropped += 1
            continue
        pairs.append((a, b))
    return pairs, dropped

"""BLEU both ways, from fairseq-generate's output.

- ``bleu_tokenized``: the papers' BLEU, on the tokenised text the model was
  trained on, BPE removed (what fairseq-score / multi-bleu.perl compute:
  sacreBLEU with ``tokenize=none``). With ``compound=True`` hyphenated
  compounds are first split into ``##AT##-##AT##`` in hypotheses and
  references, as fairseq's compound_split_bleu.sh does for WMT'14 En-De.
- ``sacrebleu``: detokenised BLEU (Moses detokeniser on the hypotheses)
  against untokenised references, with sacreBLEU's signature.
- ``chrf``: sacreBLEU's chrF (character 6-grams, beta 2) on the same
  detokenised text, with its signature.
"""

import re

from fairseq_rskip.errors import UserError

_COMPOUND = re.compile(r"(\S)-(\S)")


def compound_split(line):
    """fairseq's compound_split_bleu.sh: ``a-b`` -> ``a ##AT##-##AT## b`` (both sides of the comparison)."""
    # the perl s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g does not re-match the consumed right character,
    # so apply once, as perl does
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def parse_generate_output(path):
    """Return ({id: hypothesis}, {id: target}) from fairseq-generate's output (H-/T- lines)."""
    hyps, refs = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("H-"):
                parts = line.split("\t", 2)
                hyps[int(parts[0][2:])] = parts[2] if len(parts) > 2 else ""
            elif line.startswith("T-"):
                parts = line.split("\t", 1)
                refs[int(parts[0][2:])] = parts[1] if len(parts) > 1 else ""
    if not hyps:
        raise UserError(f"no hypotheses (H- lines) in {path}")
    missing = sorted(set(hyps) - set(refs))
    if missing:
        raise UserError(f"{path}: hypotheses without target (T-) lines, e.g. id {missing[0]}")
    return hyps, refs


def score(hyps, refs, tgt_lang, raw_refs=None, compound=False, detok="moses"):
    """Compute both BLEU scores and chrF. ``hyps``/``refs``: lists of tokenised sentences, in order.

    ``raw_refs``: untokenised references for sacreBLEU and chrF (default: the detokenised
    ``refs``). Returns the detokenised hypotheses and the references scored against too.
    """
    from sacrebleu.metrics import BLEU, CHRF

    tok_h, tok_r = hyps, refs
    if compound:
        tok_h = [compound_split(h) for h in hyps]
        tok_r = [compound_split(r) for r in refs]
    bleu_tok = BLEU(tokenize="none", force=True)
    tokenized = bleu_tok.corpus_score(tok_h, [tok_r])

    if detok == "moses":
        from sacremoses import MosesDetokenizer

        md = MosesDetokenizer(lang=tgt_lang)
        detok_fn = lambda s: md.detokenize(s.split())  # noqa: E731
    elif detok == "none":
        detok_fn = lambda s: s  # noqa: E731
    else:
        raise UserError(f"unknown --detok {detok}")
    sys_out = [detok_fn(h) for h in hyps]
    ref_out = raw_refs if raw_refs is not None else [detok_fn(r) for r in refs]
    bleu = BLEU()
    sacre = bleu.corpus_score(sys_out, [ref_out])
    chrf = CHRF()
    chrf_score = chrf.corpus_score(sys_out, [ref_out])
    return {
        "bleu_tokenized": round(tokenized.score, 2),
        "bleu_tokenized_detail": str(tokenized),
        "bleu_tokenized_signature": str(bleu_tok.get_signature()),
        "sacrebleu": round(sacre.score, 2),
        "sacrebleu_detail": str(sacre),
        "sacrebleu_signature": str(bleu.get_signature()),
        "chrf": round(chrf_score.score, 2),
        "chrf_detail": str(chrf_score),
        "chrf_signature": str(chrf.get_signature()),
        "detokenized_hypotheses": sys_out,
        "references": list(ref_out),
    }

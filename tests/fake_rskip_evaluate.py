"""Stands in for rskip-evaluate in the runner's tests (``--evaluate-command "python THIS"``).

Takes the options the runner gives (and refuses any other), and writes what rskip-evaluate
writes: the translations and references in --translations-dir (``hyp.SUBSET.en``,
``ref.SUBSET.en``) and the JSON record in --checkpoint-dir, or beside --checkpoint
(``eval_SUBSET.json``, naming the checkpoint scored: --checkpoint, else the folder's best), its
scores sacreBLEU's BLEU and chrF of those files. The test set: 80 made-up sentences. A run
(its folder's name, ``ARCH-dDEPTH-sSEED``) replaces each word with a wrong one with the
probability ``ERRORS`` gives its architecture (0.3 for one not listed), drawn with its seed;
an architecture named ``stuck`` prints one string for every sentence, as a model stopped
long before it translates does.
"""

import json
import random
import sys
from pathlib import Path

import sacrebleu

ERRORS = {"postln": 0.5, "rskip": 0.1}
WORDS = [f"word{i}" for i in range(50)]
OPTIONS = ("--data", "--checkpoint-dir", "--checkpoint", "--subset", "--beam", "--lenpen", "--user-dir",
           "--avg-last", "--translations-dir")


def test_set(n=80):
    rng = random.Random(0)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(n)]


def translate(refs, arch, seed):
    if arch == "stuck":
        return ["word1 word1 word1 word1 word1"] * len(refs)
    rng = random.Random(f"{arch}-{seed}")
    p = ERRORS.get(arch, 0.3)
    return [" ".join(w if rng.random() > p else rng.choice(WORDS) for w in r.split()) for r in refs]


def main(argv):
    opts = {}
    for name, value in zip(argv[::2], argv[1::2]):
        if name not in OPTIONS:
            print(f"unexpected option {name}", file=sys.stderr)
            return 3
        opts[name] = value
    if "--checkpoint" in opts:
        scored = Path(opts["--checkpoint"])
        ckpt_dir = scored.parent
    else:
        ckpt_dir = Path(opts["--checkpoint-dir"])
        scored = ckpt_dir / "checkpoint_best.pt"
    kept = Path(opts["--translations-dir"])
    subset = opts.get("--subset", "test")
    arch, _, seed = ckpt_dir.parent.name.split("-")[:3]
    refs = test_set()
    hyps = translate(refs, arch, seed)
    hyp_file, ref_file = kept / f"hyp.{subset}.en", kept / f"ref.{subset}.en"
    hyp_file.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    ref_file.write_text("".join(r + "\n" for r in refs), encoding="utf-8")
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    record = {
        "bleu_tokenized": round(sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score, 2),
        "sacrebleu": round(bleu.corpus_score(hyps, [refs]).score, 2),
        "sacrebleu_signature": str(bleu.get_signature()),
        "chrf": round(chrf.corpus_score(hyps, [refs]).score, 2),
        "chrf_signature": str(chrf.get_signature()),
        "checkpoint": str(scored), "subset": subset,
        "num_sentences": len(refs), "translations": str(hyp_file), "references_file": str(ref_file),
    }
    (ckpt_dir / f"eval_{subset}.json").write_text(json.dumps(record), encoding="utf-8")
    print(f"BLEU {record['bleu_tokenized']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

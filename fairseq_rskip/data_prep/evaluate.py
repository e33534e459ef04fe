"""Translate a test set with fairseq-generate and score it both ways (scripts/evaluate.sh).

    python -m fairseq_rskip.data_prep.evaluate --data DATA_BIN \
        (--checkpoint FILE | --checkpoint-dir DIR [--avg-last N]) \
        [--beam 5] [--lenpen 1.0] [--subset test] [--compound-split] \
        [--user-dir PATH] [--max-tokens N] [--detok moses|none] [-- extra fairseq-generate args]

Scores:

- ``bleu_tokenized``: the papers' BLEU, on the tokenised text the model was
  trained on, BPE removed (what fairseq-score / multi-bleu.perl compute:
  sacreBLEU with ``tokenize=none``). ``--compound-split`` first splits
  hyphenated compounds into ``##AT##-##AT##`` in hypotheses and references, as
  fairseq's compound_split_bleu.sh does for WMT'14 En-De.
- ``sacrebleu``: detokenised BLEU (Moses detokeniser on the hypotheses)
  against the untokenised references kept in the data-bin (``ref.SUBSET.TGT``,
  written by prepare-parallel.sh), with sacreBLEU's signature.

Prints one line on stdout, beginning ``BLEU``, and writes a JSON record next
to the checkpoint (``<ckpt_dir>/eval_<subset>.json`` unless ``--json-out``).
``--generate-output FILE`` scores an existing fairseq-generate output instead
of running it.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from fairseq_rskip.data_prep.bpe import post_process_flag
from fairseq_rskip.data_prep.common import PrepError, atomic_output, logger, repo_root, run_cli, setup_logging
from fairseq_rskip.data_prep.text import read_lines

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
        raise PrepError(f"no hypotheses (H- lines) in {path}")
    missing = sorted(set(hyps) - set(refs))
    if missing:
        raise PrepError(f"{path}: hypotheses without target (T-) lines, e.g. id {missing[0]}")
    return hyps, refs


def load_prep_meta(data):
    p = Path(data) / "prep.json"
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {}


def score(hyps, refs, tgt_lang, raw_refs=None, compound=False, detok="moses"):
    """Compute both BLEU scores. ``hyps``/``refs``: lists of tokenised sentences, in order.

    ``raw_refs``: untokenised references for sacreBLEU (default: the detokenised ``refs``).
    """
    from sacrebleu.metrics import BLEU

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
        raise PrepError(f"unknown --detok {detok}")
    sys_out = [detok_fn(h) for h in hyps]
    ref_out = raw_refs if raw_refs is not None else [detok_fn(r) for r in refs]
    bleu = BLEU()
    sacre = bleu.corpus_score(sys_out, [ref_out])
    return {
        "bleu_tokenized": round(tokenized.score, 2),
        "bleu_tokenized_detail": str(tokenized),
        "bleu_tokenized_signature": str(bleu_tok.get_signature()),
        "sacrebleu": round(sacre.score, 2),
        "sacrebleu_detail": str(sacre),
        "sacrebleu_signature": str(bleu.get_signature()),
        "detokenized_hypotheses": sys_out,
    }


def resolve_checkpoint(args):
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise PrepError(f"checkpoint not found: {ckpt}")
        if args.avg_last:
            raise PrepError("--avg-last needs --checkpoint-dir (it averages the last N epoch checkpoints there)")
        return ckpt
    d = Path(args.checkpoint_dir)
    if not d.is_dir():
        raise PrepError(f"checkpoint folder not found: {d}")
    if args.avg_last:
        n_epoch = [p for p in d.iterdir() if re.fullmatch(r"checkpoint\d+\.pt", p.name)]
        n_update = [p for p in d.iterdir() if re.fullmatch(r"checkpoint_\d+_\d+\.pt", p.name)]
        # epoch checkpoints (checkpointN.pt) as fairseq's recipes average; update checkpoints
        # (checkpoint_E_U.pt, --save-interval-updates) when the run kept no epoch checkpoints
        kind = "epoch" if n_epoch or not n_update else "update"
        found = n_epoch if kind == "epoch" else n_update
        if len(found) < args.avg_last:
            raise PrepError(
                f"--avg-last {args.avg_last}: {d} holds {len(n_epoch)} epoch checkpoints (checkpointN.pt) "
                f"and {len(n_update)} update checkpoints (checkpoint_E_U.pt)"
            )
        out = d / f"checkpoint.avg{args.avg_last}.pt"
        script = repo_root() / "scripts" / "average_checkpoints.py"
        with atomic_output(out) as tmp:
            cmd = [sys.executable, str(script), "--inputs", str(d),
                   f"--num-{kind}-checkpoints", str(args.avg_last), "--output", str(tmp)]
            logger.info("averaging: %s", " ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
            if proc.returncode != 0:
                raise PrepError(f"checkpoint averaging failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        return out
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        if (d / name).is_file():
            return d / name
    raise PrepError(f"no checkpoint_best.pt or checkpoint_last.pt in {d}")


def _env():
    env = dict(os.environ)
    root = str(repo_root())
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def subset_size(data, subset):
    """Number of sentences in the data-bin's ``subset`` (None if it is not found)."""
    from fairseq.data import indexed_dataset

    idx = sorted(Path(data).glob(f"{subset}.*-*.*.idx"))
    if not idx:
        return None
    return len(indexed_dataset.MMapIndexedDataset(str(idx[0])[: -len(".idx")]))


def generate_command(args, ckpt, meta, extra):
    """fairseq-generate's command line; the BPE of the data-bin (prep.json) picks how to undo it."""
    cmd = [
        sys.executable, "-m", "fairseq_cli.generate", str(args.data),
        "--path", str(ckpt), "--gen-subset", args.subset,
        "--beam", str(args.beam), "--lenpen", str(args.lenpen),
        "--max-tokens", str(args.max_tokens), "--user-dir", str(args.user_dir),
        "--task", "translation",
        # fairseq drops a last batch smaller than this multiple (default 8,
        # fairseq issue 5036): with 1 every test sentence is translated
        "--required-batch-size-multiple", "1",
    ]
    if meta.get("src_lang"):
        cmd += ["--source-lang", meta["src_lang"], "--target-lang", meta["tgt_lang"]]
    cmd += post_process_flag(meta.get("bpe", "subword_nmt"))
    return cmd + list(extra)


def run_generate(args, ckpt, meta, out_path, extra):
    cmd = generate_command(args, ckpt, meta, extra)
    logger.info("running %s", " ".join(cmd))
    with atomic_output(out_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=_env())
        if proc.returncode != 0:
            raise PrepError(f"fairseq-generate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def build_parser():
    p = argparse.ArgumentParser(
        prog="evaluate.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="fairseq data-bin (made by prepare-*.sh)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a checkpoint file")
    g.add_argument("--checkpoint-dir", help="a folder: checkpoint_best.pt, or the average of --avg-last N")
    p.add_argument("--avg-last", type=int, default=0, metavar="N",
                   help="average the last N epoch checkpoints (checkpointEPOCH.pt) first")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--subset", default="test")
    p.add_argument("--compound-split", action="store_true", help="WMT En-De: split compounds in tokenised BLEU")
    p.add_argument("--user-dir", default=str(repo_root() / "fairseq_rskip"))
    p.add_argument("--max-tokens", type=int, default=8000)
    p.add_argument("--detok", choices=("moses", "none"), default="moses")
    p.add_argument("--json-out", help="where to write the JSON record (default <ckpt_dir>/eval_<subset>.json)")
    p.add_argument("--generate-output", help="score this existing fairseq-generate output (no generation)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv=None):
    args, extra = build_parser().parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    setup_logging(args.verbose)
    if args.avg_last < 0:
        raise PrepError("--avg-last must be positive")
    data = Path(args.data)
    if not data.is_dir():
        raise PrepError(f"data-bin not found: {data}")
    meta = load_prep_meta(data)
    ckpt = resolve_checkpoint(args)
    if args.generate_output:
        gen_out = Path(args.generate_output)
    else:
        suffix = f".avg{args.avg_last}" if args.avg_last else ""
        gen_out = ckpt.parent / f"generate-{args.subset}{suffix}.txt"
        run_generate(args, ckpt, meta, gen_out, extra)

    hyps, refs = parse_generate_output(gen_out)
    ids = sorted(hyps)
    expected = subset_size(data, args.subset)
    if expected is not None and len(ids) != expected:
        raise PrepError(
            f"{gen_out} translates {len(ids)} of the {expected} sentences of {args.subset}: "
            "BLEU on a part of the test set is not comparable"
        )
    tgt = meta.get("tgt_lang")
    if tgt is None:
        dicts = sorted(data.glob(f"{args.subset}.*-*.*.idx"))
        tgt = dicts[0].name.split(".")[1].split("-")[1] if dicts else "en"
    raw_refs = None
    ref_file = data / f"ref.{args.subset}.{tgt}"
    if ref_file.is_file():
        all_refs = read_lines(ref_file)
        if ids[-1] >= len(all_refs):
            raise PrepError(f"{ref_file} has {len(all_refs)} lines but the output has sentence id {ids[-1]}")
        raw_refs = [all_refs[i] for i in ids]
    else:
        logger.warning("no %s: sacreBLEU uses the detokenised targets as references", ref_file)
    res = score([hyps[i] for i in ids], [refs[i] for i in ids], tgt, raw_refs, args.compound_split, args.detok)
    record = {
        "bleu_tokenized": res["bleu_tokenized"],
        "sacrebleu": res["sacrebleu"],
        "sacrebleu_signature": res["sacrebleu_signature"],
        "bleu_tokenized_signature": res["bleu_tokenized_signature"],
        "bleu_tokenized_detail": res["bleu_tokenized_detail"],
        "sacrebleu_detail": res["sacrebleu_detail"],
        "checkpoint": str(ckpt.resolve()),
        "avg_last": args.avg_last or None,
        "data": str(data.resolve()),
        "subset": args.subset,
        "beam": args.beam,
        "lenpen": args.lenpen,
        "compound_split": args.compound_split,
        "detok": args.detok,
        "reference": str(ref_file.resolve()) if raw_refs is not None else "detokenised targets",
        "lowercase": meta.get("lowercase"),
        "num_sentences": len(ids),
        "generate_output": str(gen_out.resolve()),
    }
    json_out = Path(args.json_out) if args.json_out else ckpt.parent / f"eval_{args.subset}.json"
    with atomic_output(json_out) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    line = (
        f"BLEU tokenized={record['bleu_tokenized']:.2f} sacrebleu={record['sacrebleu']:.2f} "
        f"subset={args.subset} n={len(ids)} beam={args.beam} lenpen={args.lenpen} "
        f"checkpoint={ckpt} signature={record['sacrebleu_signature']} json={json_out}"
    )
    print(line)
    return record


if __name__ == "__main__":
    run_cli(main)

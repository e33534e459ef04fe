"""Generic preparation of raw parallel text into a fairseq data-bin.

    rskip-prepare parallel --src-lang de --tgt-lang en \
        --train-prefix raw/train --valid-prefix raw/valid --test-prefix raw/test \
        --dest DIR [--bpe subword_nmt|sentencepiece|none] [--bpe-size N] [--lowercase] \
        [--joined-dictionary]

Reads ``PREFIX.SRC`` / ``PREFIX.TGT`` (UTF-8, one sentence a line, aligned) and
writes, in DIR:

- ``text/{train,valid,test}.{src,tgt}``  normalised, Moses-tokenised (and lowercased) text;
  training pairs cleaned by length and length ratio (clean-corpus-n.perl's rule)
- ``text/{valid,test}.ref.{tgt}``  the same references before tokenisation (for sacreBLEU)
- ``bpe/bpe.codes`` or ``bpe/spm.model`` and ``bpe/{split}.{lang}``  the joint BPE model and
  the segmented text
- ``data-bin/``  fairseq-preprocess's output, plus ``prep.json`` (how it was made) and
  ``ref.{valid,test}.{tgt}`` (untokenised references, read by rskip-evaluate)

Every step is stamped and reused on a re-run with the same inputs and options;
``data-bin`` is renamed into place only when complete (see common.py).
:func:`build_parser` defines the options (``rskip-prepare parallel``, and
the recipes pass theirs through it); :func:`run` does the work.
"""

import argparse
import json
import os
import shutil
from pathlib import Path

from fairseq_rskip.data_prep import bpe as bpe_mod
from fairseq_rskip.data_prep.common import Stamps, count_lines, fingerprint, logger
from fairseq_rskip.data_prep.text import Tokenizer, iter_lines, keep_pair, tokenize_file, validate_parallel
from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import atomic_output, atomic_outputs, locked, remove, remove_partials


def build_parser(prog="rskip-prepare parallel"):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--src-lang", required=True)
    p.add_argument("--tgt-lang", required=True)
    p.add_argument("--train-prefix", required=True, help="raw training text PREFIX.{src,tgt}")
    p.add_argument("--valid-prefix", help="raw validation text (or use --valid-every)")
    p.add_argument("--test-prefix", required=True, help="raw test text")
    p.add_argument("--dest", required=True, help="output folder; the data-bin is DEST/data-bin")
    p.add_argument("--bpe", choices=bpe_mod.BPE_CHOICES, default="subword_nmt",
                   help="subword_nmt (default), sentencepiece (BPE model), or none (word level)")
    p.add_argument("--bpe-size", type=int, default=10000,
                   help="merge operations (subword_nmt) or vocabulary size (sentencepiece); default 10000")
    p.add_argument("--lowercase", action="store_true", help="lowercase everything (IWSLT'14 recipe)")
    p.add_argument("--joined-dictionary", action="store_true", help="one dictionary for both languages")
    p.add_argument("--valid-every", type=int, default=0, metavar="K",
                   help="take every K-th cleaned training pair as validation set (fairseq's IWSLT'14: 23)")
    p.add_argument("--no-tokenize", action="store_true", help="input is already tokenised (only normalise)")
    p.add_argument("--normalize-punct", action="store_true", help="Moses punctuation normalisation (WMT recipe)")
    p.add_argument("--aggressive-dash-splits", action="store_true", help="tokenizer.perl -a (WMT recipe)")
    p.add_argument("--no-clean", action="store_true", help="keep every training pair")
    p.add_argument("--clean-ratio", type=float, default=1.5)
    p.add_argument("--clean-min-len", type=int, default=1)
    p.add_argument("--clean-max-len", type=int, default=250, help="tokens (fairseq: 175 IWSLT, 250 WMT)")
    p.add_argument("--nwords-src", type=int, default=-1, help="fairseq-preprocess --nwordssrc")
    p.add_argument("--nwords-tgt", type=int, default=-1, help="fairseq-preprocess --nwordstgt")
    p.add_argument("--threshold", type=int, default=0, help="fairseq-preprocess --thresholdsrc/--thresholdtgt")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def check_args(args):
    if args.src_lang == args.tgt_lang:
        raise UserError("--src-lang and --tgt-lang must differ")
    if bool(args.valid_prefix) == bool(args.valid_every):
        raise UserError("give exactly one of --valid-prefix and --valid-every")
    if args.valid_every and args.valid_every < 2:
        raise UserError("--valid-every must be at least 2")
    if args.bpe != "none" and args.bpe_size < 1:
        raise UserError("--bpe-size must be positive")
    if args.clean_ratio < 1:
        raise UserError("--clean-ratio must be at least 1")


def config_of(args):
    """The options that change the output (not --workers, --verbose, --dest)."""
    skip = {"workers", "verbose", "dest"}
    cfg = {k: v for k, v in sorted(vars(args).items()) if k not in skip}
    for k in ("train_prefix", "valid_prefix", "test_prefix"):
        if cfg.get(k):
            cfg[k] = str(Path(cfg[k]).resolve())
    return cfg


STEP_OPTIONS = {
    "tokenize": ("src_lang", "tgt_lang", "train_prefix", "valid_prefix", "test_prefix", "no_tokenize",
                 "normalize_punct", "aggressive_dash_splits", "lowercase"),
    "clean": ("no_clean", "clean_ratio", "clean_min_len", "clean_max_len", "valid_every"),
    "bpe_learn": ("bpe", "bpe_size"),
    "bpe_apply": ("bpe",),
}


def step_config(cfg, step):
    """The options a step depends on (the rest reach it through its inputs' fingerprints)."""
    return {k: cfg[k] for k in STEP_OPTIONS[step]}


def fairseq_preprocess(argv):
    """Run fairseq-preprocess with ``argv`` in this process (fairseq is imported by the plugin anyway)."""
    import logging

    from fairseq import options
    from fairseq_cli import preprocess

    logger.info("fairseq-preprocess %s", " ".join(argv))
    parser = options.get_preprocessing_parser()
    try:
        pargs = parser.parse_args(argv)
    except SystemExit:
        raise UserError(f"fairseq-preprocess rejected its arguments: {' '.join(argv)}") from None
    fl = logging.getLogger("fairseq_cli.preprocess")
    before = list(fl.handlers)
    try:
        preprocess.main(pargs)
    except Exception as e:  # noqa: BLE001 (reported to the user as a preparation error)
        raise UserError(f"fairseq-preprocess failed: {type(e).__name__}: {e}") from e
    finally:
        for h in fl.handlers[:]:  # main() adds a log-file handler on every call
            if h not in before:
                fl.removeHandler(h)
                h.close()


def run(args):
    """Prepare ``args.dest`` (locked meanwhile: a second process is refused); returns the data-bin."""
    check_args(args)
    with locked(args.dest, what="--dest"):
        return _run(args)


def _run(args):
    dest = Path(args.dest)
    remove_partials(dest)
    stamps = Stamps(dest)
    cfg = config_of(args)
    s, t = args.src_lang, args.tgt_lang
    langs = (s, t)
    databin = dest / "data-bin"

    def invalidate_final():
        if databin.exists():
            logger.info("removing %s (its inputs are being rebuilt)", databin)
        stamps.clear("binarize")
        remove(databin)

    def step(name, params, outputs, fn):
        if not stamps.is_done(name, params, outputs):
            invalidate_final()
        return stamps.run(name, params, outputs, fn)

    # 1. validate + normalise + tokenise every input set
    inputs = {"train": args.train_prefix, "test": args.test_prefix}
    if args.valid_prefix:
        inputs["valid"] = args.valid_prefix
    raw_files = {name: [Path(f"{prefix}.{lang}") for lang in langs] for name, prefix in inputs.items()}
    for name, files in raw_files.items():
        for f in files:
            if not f.is_file():
                raise UserError(f"missing {name} file {f} (expected PREFIX.{s} and PREFIX.{t})")
    tokdir = dest / "tok"
    tok_out = {name: [tokdir / f"{name}.{lang}" for lang in langs] for name in inputs}
    norm_out = {name: [tokdir / f"{name}.norm.{lang}" for lang in langs] for name in inputs}
    tok_params = {
        "config": step_config(cfg, "tokenize"),
        "inputs": fingerprint([f for files in raw_files.values() for f in files]),
    }

    def do_tokenize():
        for name, files in raw_files.items():
            n = validate_parallel(*files)
            logger.info("%s: %d sentence pairs", name, n)
        for name, files in raw_files.items():
            for lang, raw, tok, norm in zip(langs, files, tok_out[name], norm_out[name]):
                tokenizer = Tokenizer(
                    lang,
                    tokenize=not args.no_tokenize,
                    normalize_punct=args.normalize_punct,
                    aggressive_dash_splits=args.aggressive_dash_splits,
                    lowercase=args.lowercase,
                )
                with atomic_outputs([norm, tok]) as (tmp_norm, tmp_tok):
                    tokenize_file(raw, tmp_norm, tmp_tok, tokenizer, workers=args.workers)

    all_tok = [f for name in inputs for f in tok_out[name] + norm_out[name]]
    step("tokenize", tok_params, all_tok, do_tokenize)

    # 2. clean the training pairs, split off validation, fix the final text
    textdir = dest / "text"
    splits = ("train", "valid", "test")
    text_out = {sp: [textdir / f"{sp}.{lang}" for lang in langs] for sp in splits}
    ref_out = {sp: textdir / f"{sp}.ref.{t}" for sp in splits}
    counts = {}

    def do_clean():
        src_tok, tgt_tok = tok_out["train"]
        tgt_norm = norm_out["train"][1]
        kept = dropped = 0
        outs = text_out["train"] + [ref_out["train"]]
        if args.valid_every:
            outs += text_out["valid"] + [ref_out["valid"]]
        with atomic_outputs(outs) as tmps:
            files = [open(p, "w", encoding="utf-8") for p in tmps]
            try:
                tr = files[:3]
                va = files[3:6] if args.valid_every else None
                for (_, a), (_, b), (_, r) in zip(iter_lines(src_tok), iter_lines(tgt_tok), iter_lines(tgt_norm)):
                    if not args.no_clean and not keep_pair(a, b, args.clean_ratio, args.clean_min_len, args.clean_max_len):
                        dropped += 1
                        continue
                    kept += 1
                    target = va if (va is not None and kept % args.valid_every == 0) else tr
                    for f, line in zip(target, (a, b, r)):
                        f.write(line + "\n")
            finally:
                for f in files:
                    f.close()
        logger.info("cleaning kept %d training pairs, dropped %d", kept, dropped)
        if kept == 0:
            raise UserError("cleaning dropped every training pair; check the data or --clean-* options")
        for sp in ("valid", "test"):
            if sp not in inputs:
                continue
            for src_path, dst_path in zip(tok_out[sp] + [norm_out[sp][1]], text_out[sp] + [ref_out[sp]]):
                with atomic_output(dst_path) as tmp:
                    shutil.copyfile(src_path, tmp)

    clean_params = {"config": step_config(cfg, "clean"), "inputs": fingerprint(all_tok)}
    all_text = [f for sp in splits for f in text_out[sp] + [ref_out[sp]]]
    step("clean", clean_params, all_text, do_clean)
    for sp in splits:
        counts[sp] = count_lines(text_out[sp][0])
        if counts[sp] == 0:
            raise UserError(f"the {sp} set is empty after preparation")

    # 3. BPE
    if args.bpe == "none":
        seg_out = text_out
        model_path = None
    else:
        bpedir = dest / "bpe"
        model_path = bpedir / bpe_mod.model_filename(args.bpe)

        def do_learn():
            with atomic_output(model_path) as tmp:
                bpedir.mkdir(parents=True, exist_ok=True)
                bpe_mod.learn(args.bpe, text_out["train"], args.bpe_size, tmp, bpedir)

        step("bpe_learn", {"config": step_config(cfg, "bpe_learn"), "inputs": fingerprint(text_out["train"])}, [model_path], do_learn)
        seg_out = {sp: [bpedir / f"{sp}.{lang}" for lang in langs] for sp in splits}

        def do_apply():
            for sp in splits:
                for src_path, dst_path in zip(text_out[sp], seg_out[sp]):
                    with atomic_output(dst_path) as tmp:
                        bpe_mod.apply(args.bpe, model_path, src_path, tmp, workers=args.workers)

        all_seg = [f for sp in splits for f in seg_out[sp]]
        apply_inputs = [model_path] + [f for sp in splits for f in text_out[sp]]
        step("bpe_apply", {"config": step_config(cfg, "bpe_apply"), "inputs": fingerprint(apply_inputs)}, all_seg, do_apply)

    # 4. fairseq-preprocess
    seg_files = [f for sp in splits for f in seg_out[sp]]
    refs = [ref_out["valid"], ref_out["test"]]

    def do_binarize():
        with atomic_output(databin) as tmp:
            argv = [
                "--source-lang", s, "--target-lang", t,
                "--trainpref", str(seg_out["train"][0].with_suffix("")),
                "--validpref", str(seg_out["valid"][0].with_suffix("")),
                "--testpref", str(seg_out["test"][0].with_suffix("")),
                "--destdir", str(tmp),
                "--workers", str(max(1, args.workers)),
                "--nwordssrc", str(args.nwords_src), "--nwordstgt", str(args.nwords_tgt),
                "--thresholdsrc", str(args.threshold), "--thresholdtgt", str(args.threshold),
            ]
            if args.joined_dictionary:
                argv.append("--joined-dictionary")
            fairseq_preprocess(argv)
            for sp, ref in zip(("valid", "test"), refs):
                shutil.copyfile(ref, tmp / f"ref.{sp}.{t}")
            meta = {
                "src_lang": s,
                "tgt_lang": t,
                "bpe": args.bpe,
                "bpe_size": args.bpe_size if args.bpe != "none" else None,
                "bpe_model": str(model_path.resolve()) if model_path else None,
                "lowercase": args.lowercase,
                "tokenizer": "none" if args.no_tokenize else "moses",
                "aggressive_dash_splits": args.aggressive_dash_splits,
                "normalize_punct": args.normalize_punct,
                "joined_dictionary": args.joined_dictionary,
                "sentences": counts,
                "references": {sp: f"ref.{sp}.{t}" for sp in ("valid", "test")},
                "config": cfg,
            }
            (tmp / "prep.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    stamps.run("binarize", {"config": cfg, "inputs": fingerprint(seg_files + refs)}, [databin / "prep.json"], do_binarize)
    logger.info("data-bin ready: %s (%s)", databin, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return databin

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
    remove_partials(Path(args.dest))
    prep = Preparation(args)
    prep.tokenize()
    prep.clean()
    seg_out, model_path = prep.segment()
    databin = prep.binarize(seg_out, model_path)
    logger.info("data-bin ready: %s (%s)", databin, ", ".join(f"{k} {v}" for k, v in prep.counts.items()))
    return databin


SPLITS = ("train", "valid", "test")


class Preparation:
    """The steps of one preparation of ``args.dest``, in order: :meth:`tokenize`,
    :meth:`clean`, :meth:`segment` (BPE) and :meth:`binarize`. Each step is stamped and
    skipped on a re-run with the same inputs and options; a step that runs again removes
    the data-bin, which only :meth:`binarize` writes."""

    def __init__(self, args):
        self.args = args
        self.dest = Path(args.dest)
        self.stamps = Stamps(self.dest)
        self.cfg = config_of(args)
        self.langs = (args.src_lang, args.tgt_lang)
        self.databin = self.dest / "data-bin"
        self.inputs = {"train": args.train_prefix, "test": args.test_prefix}
        if args.valid_prefix:
            self.inputs["valid"] = args.valid_prefix
        self.raw_files = {name: [Path(f"{prefix}.{lang}") for lang in self.langs]
                          for name, prefix in self.inputs.items()}
        tokdir, textdir = self.dest / "tok", self.dest / "text"
        self.tok_out = {name: [tokdir / f"{name}.{lang}" for lang in self.langs] for name in self.inputs}
        self.norm_out = {name: [tokdir / f"{name}.norm.{lang}" for lang in self.langs] for name in self.inputs}
        self.all_tok = [f for name in self.inputs for f in self.tok_out[name] + self.norm_out[name]]
        self.text_out = {sp: [textdir / f"{sp}.{lang}" for lang in self.langs] for sp in SPLITS}
        self.ref_out = {sp: textdir / f"{sp}.ref.{args.tgt_lang}" for sp in SPLITS}
        self.counts = {}

    def step(self, name, params, outputs, fn):
        """Run step ``name`` unless done with these ``params``; removes the data-bin first."""
        if not self.stamps.is_done(name, params, outputs):
            if self.databin.exists():
                logger.info("removing %s (its inputs are being rebuilt)", self.databin)
            self.stamps.clear("binarize")
            remove(self.databin)
        return self.stamps.run(name, params, outputs, fn)

    # 1. validate, normalise and tokenise every input set

    def tokenize(self):
        for name, files in self.raw_files.items():
            for f in files:
                if not f.is_file():
                    raise UserError(f"missing {name} file {f} (expected PREFIX.{self.langs[0]} "
                                    f"and PREFIX.{self.langs[1]})")
        params = {"config": step_config(self.cfg, "tokenize"),
                  "inputs": fingerprint([f for files in self.raw_files.values() for f in files])}
        self.step("tokenize", params, self.all_tok, self._tokenize)

    def _tokenize(self):
        args = self.args
        for name, files in self.raw_files.items():
            logger.info("%s: %d sentence pairs", name, validate_parallel(*files))
        for name, files in self.raw_files.items():
            for lang, raw, tok, norm in zip(self.langs, files, self.tok_out[name], self.norm_out[name]):
                tokenizer = Tokenizer(lang, tokenize=not args.no_tokenize,
                                      normalize_punct=args.normalize_punct,
                                      aggressive_dash_splits=args.aggressive_dash_splits,
                                      lowercase=args.lowercase)
                with atomic_outputs([norm, tok]) as (tmp_norm, tmp_tok):
                    tokenize_file(raw, tmp_norm, tmp_tok, tokenizer, workers=args.workers)

    # 2. clean the training pairs, split off validation, fix the final text

    def clean(self):
        params = {"config": step_config(self.cfg, "clean"), "inputs": fingerprint(self.all_tok)}
        all_text = [f for sp in SPLITS for f in self.text_out[sp] + [self.ref_out[sp]]]
        self.step("clean", params, all_text, self._clean)
        for sp in SPLITS:
            self.counts[sp] = count_lines(self.text_out[sp][0])
            if self.counts[sp] == 0:
                raise UserError(f"the {sp} set is empty after preparation")

    def _clean(self):
        kept, dropped = self._clean_training_pairs()
        logger.info("cleaning kept %d training pairs, dropped %d", kept, dropped)
        if kept == 0:
            raise UserError("cleaning dropped every training pair; check the data or --clean-* options")
        for sp in ("valid", "test"):
            if sp not in self.inputs:
                continue
            sources = self.tok_out[sp] + [self.norm_out[sp][1]]
            for src_path, dst_path in zip(sources, self.text_out[sp] + [self.ref_out[sp]]):
                with atomic_output(dst_path) as tmp:
                    shutil.copyfile(src_path, tmp)

    def _clean_training_pairs(self):
        """Write the kept training pairs (every ``--valid-every``-th to valid); ``(kept, dropped)``."""
        args = self.args
        src_tok, tgt_tok = self.tok_out["train"]
        tgt_norm = self.norm_out["train"][1]
        kept = dropped = 0
        outs = self.text_out["train"] + [self.ref_out["train"]]
        if args.valid_every:
            outs += self.text_out["valid"] + [self.ref_out["valid"]]
        with atomic_outputs(outs) as tmps:
            files = [open(p, "w", encoding="utf-8") for p in tmps]
            try:
                tr = files[:3]
                va = files[3:6] if args.valid_every else None
                for (_, a), (_, b), (_, r) in zip(iter_lines(src_tok), iter_lines(tgt_tok), iter_lines(tgt_norm)):
                    if not args.no_clean and not keep_pair(a, b, args.clean_ratio, args.clean_min_len,
                                                           args.clean_max_len):
                        dropped += 1
                        continue
                    kept += 1
                    target = va if (va is not None and kept % args.valid_every == 0) else tr
                    for f, line in zip(target, (a, b, r)):
                        f.write(line + "\n")
            finally:
                for f in files:
                    f.close()
        return kept, dropped

    # 3. BPE

    def segment(self):
        """``(segmented files per split, BPE model or None)``: the text itself with ``--bpe none``."""
        args = self.args
        if args.bpe == "none":
            return self.text_out, None
        bpedir = self.dest / "bpe"
        model_path = bpedir / bpe_mod.model_filename(args.bpe)

        def learn():
            with atomic_output(model_path) as tmp:
                bpedir.mkdir(parents=True, exist_ok=True)
                bpe_mod.learn(args.bpe, self.text_out["train"], args.bpe_size, tmp, bpedir)

        self.step("bpe_learn", {"config": step_config(self.cfg, "bpe_learn"),
                                "inputs": fingerprint(self.text_out["train"])}, [model_path], learn)
        seg_out = {sp: [bpedir / f"{sp}.{lang}" for lang in self.langs] for sp in SPLITS}

        def apply():
            for sp in SPLITS:
                for src_path, dst_path in zip(self.text_out[sp], seg_out[sp]):
                    with atomic_output(dst_path) as tmp:
                        bpe_mod.apply(args.bpe, model_path, src_path, tmp, workers=args.workers)

        all_seg = [f for sp in SPLITS for f in seg_out[sp]]
        apply_inputs = [model_path] + [f for sp in SPLITS for f in self.text_out[sp]]
        self.step("bpe_apply", {"config": step_config(self.cfg, "bpe_apply"),
                                "inputs": fingerprint(apply_inputs)}, all_seg, apply)
        return seg_out, model_path

    # 4. fairseq-preprocess

    def binarize(self, seg_out, model_path):
        """The data-bin of the segmented text, with the references and ``prep.json``."""
        seg_files = [f for sp in SPLITS for f in seg_out[sp]]
        refs = [self.ref_out["valid"], self.ref_out["test"]]
        params = {"config": self.cfg, "inputs": fingerprint(seg_files + refs)}
        self.stamps.run("binarize", params, [self.databin / "prep.json"],
                        lambda: self._binarize(seg_out, model_path, refs))
        return self.databin

    def _binarize(self, seg_out, model_path, refs):
        args, (s, t) = self.args, self.langs
        with atomic_output(self.databin) as tmp:
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
            (tmp / "prep.json").write_text(json.dumps(self._meta(model_path), indent=1) + "\n",
                                           encoding="utf-8")

    def _meta(self, model_path) -> dict:
        """``prep.json``: how the data-bin was made."""
        args, t = self.args, self.args.tgt_lang
        return {
            "src_lang": args.src_lang,
            "tgt_lang": t,
            "bpe": args.bpe,
            "bpe_size": args.bpe_size if args.bpe != "none" else None,
            "bpe_model": str(model_path.resolve()) if model_path else None,
            "lowercase": args.lowercase,
            "tokenizer": "none" if args.no_tokenize else "moses",
            "aggressive_dash_splits": args.aggressive_dash_splits,
            "normalize_punct": args.normalize_punct,
            "joined_dictionary": args.joined_dictionary,
            "sentences": self.counts,
            "references": {sp: f"ref.{sp}.{t}" for sp in ("valid", "test")},
            "config": self.cfg,
        }

"""Translate a test set with fairseq-generate and score it (``rskip-evaluate``).

    rskip-evaluate --data DATA_BIN (--checkpoint FILE | --checkpoint-dir DIR [--avg-last N]) \
        [--beam 5] [--lenpen 1.0] [--subset test] [--compound-split] [--translations-dir DIR] \
        [--user-dir PATH] [--max-tokens N] [--detok moses|none] [-- extra fairseq-generate args]
    rskip-evaluate --compare BASELINE SYSTEM [--data DATA_BIN] [--references FILE] [--out DIR] \
        [--paired-bs-n 1000] [--paired-ar-n 10000] [--paired-seed 12345]

Scores (:mod:`fairseq_rskip.scoring.bleu`): ``bleu_tokenized``, the papers'
BLEU on the tokenised text with BPE removed (``--compound-split`` for WMT'14
En-De), and ``sacrebleu`` and ``chrf``, detokenised, against the untokenised
references kept in the data-bin (``ref.SUBSET.TGT``, written by
``rskip-prepare``), with sacreBLEU's signatures.

Prints one line on stdout, beginning ``BLEU``, and writes a JSON record next
to the checkpoint (``<ckpt_dir>/eval_<subset>.json`` unless ``--json-out``).
The translations are kept in ``--translations-dir`` (default: the
checkpoint's folder): fairseq-generate's output, the detokenised translations
scored (``hyp.SUBSET.TGT``, one sentence per line in the test set's order)
and the references they were scored against (``ref.SUBSET.TGT``), so that
any two evaluations can be compared later (``--compare``, or sacreBLEU's own
``--paired-bs``). ``--avg-last N`` averages the last N checkpoints in-process
(:mod:`fairseq_rskip.checkpoint_averaging`) first. ``--generate-output
FILE`` scores an existing fairseq-generate output instead of running it.

``--compare BASELINE SYSTEM`` runs sacreBLEU's paired tests on two systems,
each a checkpoint, a checkpoint folder or a file of translations
(:mod:`fairseq_rskip.scoring.compare`).
"""

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

from fairseq_rskip.checkpoint_averaging import last_n_checkpoints, write_average
from fairseq_rskip.checkpoint_compat import check_checkpoint_file, explain_load_error
from fairseq_rskip.data_prep.bpe import post_process_flag
from fairseq_rskip.data_prep.common import logger
from fairseq_rskip.data_prep.text import read_lines
from fairseq_rskip.errors import UserError
from fairseq_rskip.fairseq_tools import PLUGIN_DIR, child_env, fairseq_executable
from fairseq_rskip.file_io import atomic_output, write_json
from fairseq_rskip.progress import progress_bar
from fairseq_rskip.scoring.bleu import parse_generate_output, score
from fairseq_rskip.tools.common.paired import PairedSettings, write_translations


def load_prep_meta(data):
    p = Path(data) / "prep.json"
    if p.is_file():
        return json.loads(p.read_text(encoding="utf-8"))
    return {}


def resolve_checkpoint(args):
    """The checkpoint to translate with: ``--checkpoint``, the average of the last
    ``--avg-last`` checkpoints of ``--checkpoint-dir``, or its best (else last) one."""
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        if not ckpt.is_file():
            raise UserError(f"checkpoint not found: {ckpt}")
        if args.avg_last:
            raise UserError("--avg-last needs --checkpoint-dir (it averages the last N epoch checkpoints there)")
        return ckpt
    d = Path(args.checkpoint_dir)
    if not d.is_dir():
        raise UserError(f"checkpoint folder not found: {d}")
    if args.avg_last:
        n_epoch = [p for p in d.iterdir() if re.fullmatch(r"checkpoint\d+\.pt", p.name)]
        n_update = [p for p in d.iterdir() if re.fullmatch(r"checkpoint_\d+_\d+\.pt", p.name)]
        # epoch checkpoints (checkpointN.pt) as fairseq's recipes average; update checkpoints
        # (checkpoint_E_U.pt, --save-interval-updates) when the run kept no epoch checkpoints
        update_based = not n_epoch and bool(n_update)
        found = n_update if update_based else n_epoch
        if len(found) < args.avg_last:
            raise UserError(
                f"--avg-last {args.avg_last}: {d} holds {len(n_epoch)} epoch checkpoints (checkpointN.pt) "
                f"and {len(n_update)} update checkpoints (checkpoint_E_U.pt)"
            )
        inputs = last_n_checkpoints(d, args.avg_last, update_based)
        logger.info("averaging: %s", " ".join(inputs))
        return write_average(inputs, d / f"checkpoint.avg{args.avg_last}.pt")
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        if (d / name).is_file():
            return d / name
    raise UserError(f"no checkpoint_best.pt or checkpoint_last.pt in {d}")


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
        fairseq_executable("fairseq-generate"), str(args.data),
        "--path", str(ckpt), "--gen-subset", args.subset,
        "--beam", str(args.beam), "--lenpen", str(args.lenpen),
        "--max-tokens", str(args.max_tokens), "--user-dir", str(args.user_dir),
        "--task", "translation",
        # fairseq drops a last batch smaller than this multiple (default 8,
        # facebookresearch/fairseq#5036): with 1 every test sentence is translated
        "--required-batch-size-multiple", "1",
    ]
    if meta.get("src_lang"):
        cmd += ["--source-lang", meta["src_lang"], "--target-lang", meta["tgt_lang"]]
    cmd += post_process_flag(meta.get("bpe", "subword_nmt"))
    return cmd + list(extra)


def run_generate(args, ckpt, meta, out_path, extra, total=None):
    """Run fairseq-generate into ``out_path`` (atomically), counting the translated sentences
    on a progress bar. A checkpoint it cannot load is reported with its cause."""
    check_checkpoint_file(ckpt)
    cmd = generate_command(args, ckpt, meta, extra)
    logger.info("running %s", " ".join(cmd))
    with atomic_output(out_path) as tmp, tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        with open(tmp, "w", encoding="utf-8") as out, \
                progress_bar(total, desc=f"translating {args.subset}", unit="sent") as bar:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env())
            for line in proc.stdout:
                out.write(line)
                if line.startswith("H-"):
                    bar.update(1)
            proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            output = err.read()
            cause = explain_load_error(ckpt, output)
            if cause is not None:
                raise UserError(f"fairseq-generate could not load the checkpoint: {cause}")
            raise UserError(f"fairseq-generate failed ({proc.returncode}):\n{output[-3000:]}")


def build_parser(prog="rskip-evaluate"):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", help="fairseq data-bin (made by rskip-prepare); needed to translate")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a checkpoint file")
    g.add_argument("--checkpoint-dir", help="a folder: checkpoint_best.pt, or the average of --avg-last N")
    g.add_argument("--compare", nargs=2, metavar=("BASELINE", "SYSTEM"),
                   help="paired significance tests of SYSTEM against BASELINE, each a checkpoint "
                   "file, a checkpoint folder or a file of detokenised translations (one sentence "
                   "per line, in the test set's order)")
    p.add_argument("--avg-last", type=int, default=0, metavar="N",
                   help="average the last N epoch checkpoints (checkpointEPOCH.pt) first")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--subset", default="test")
    p.add_argument("--compound-split", action="store_true", help="WMT En-De: split compounds in tokenised BLEU")
    p.add_argument("--user-dir", default=str(PLUGIN_DIR),
                   help="fairseq --user-dir (default: this package's folder, %(default)s)")
    p.add_argument("--max-tokens", type=int, default=8000)
    p.add_argument("--detok", choices=("moses", "none"), default="moses")
    p.add_argument("--json-out", help="where to write the JSON record (default <ckpt_dir>/eval_<subset>.json; "
                   "with --compare, the comparison's: default OUT/comparison.json)")
    p.add_argument("--generate-output", help="score this existing fairseq-generate output (no generation)")
    p.add_argument("--translations-dir", metavar="DIR",
                   help="where fairseq-generate's output, the detokenised translations "
                   "(hyp.SUBSET.TGT) and their references (ref.SUBSET.TGT) are kept (default: "
                   "the checkpoint's folder)")
    c = p.add_argument_group("--compare")
    c.add_argument("--references", metavar="FILE",
                   help="the references, one per line (default: those the evaluation of a "
                   "compared checkpoint kept, else the data-bin's ref.SUBSET.TGT)")
    c.add_argument("--out", metavar="DIR", help="where a compared checkpoint's evaluation goes "
                   "(DIR/baseline, DIR/system) and the comparison's record (DIR/comparison.json)")
    c.add_argument("--paired-bs-n", type=int, default=PairedSettings.paired_bs_n, metavar="N",
                   help="resamples of the paired bootstrap (default: %(default)s, sacreBLEU's)")
    c.add_argument("--paired-ar-n", type=int, default=PairedSettings.paired_ar_n, metavar="N",
                   help="trials of approximate randomisation (default: %(default)s, sacreBLEU's)")
    c.add_argument("--paired-seed", type=int, default=PairedSettings.seed, metavar="N",
                   help="seed of the tests' random numbers, sacreBLEU's SACREBLEU_SEED "
                   "(default: %(default)s, sacreBLEU's; at least 1: sacreBLEU reads 0 as unseeded)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def check_data_folder(data: Path) -> None:
    """``--data`` must be a folder, and not the one rskip-prepare made around the data-bin."""
    if not data.is_dir():
        raise UserError(f"data-bin not found: {data}")
    if not any(data.glob("dict.*.txt")) and (data / "data-bin").is_dir():
        raise UserError(
            f"--data {data} is the folder rskip-prepare made, not its data-bin: give "
            f"--data {data / 'data-bin'}"
        )


def check_options(args) -> None:
    """The options of an evaluation that are wrong whatever the data."""
    if args.avg_last < 0:
        raise UserError("--avg-last must be positive")
    if args.beam < 1:
        raise UserError(f"--beam must be at least 1 (the hypotheses beam search keeps; 1 is "
                        f"greedy search); got {args.beam}")
    if args.generate_output and not Path(args.generate_output).is_file():
        raise UserError(
            f"--generate-output {args.generate_output} not found: give a file fairseq-generate "
            "wrote (its standard output), or leave --generate-output out to translate now"
        )
    if args.data is None:
        raise UserError("--data DATA_BIN is needed: the data-bin the checkpoint was trained on "
                        "(rskip-prepare's DEST/data-bin)")


def raw_references(data: Path, subset: str, meta: dict, ids: list):
    """``(target language, raw references of the sentences ids or None, their file)``:
    the data-bin's ``ref.<subset>.<tgt>`` (rskip-prepare keeps the raw targets there)."""
    tgt = meta.get("tgt_lang")
    if tgt is None:
        dicts = sorted(data.glob(f"{subset}.*-*.*.idx"))
        tgt = dicts[0].name.split(".")[1].split("-")[1] if dicts else "en"
    ref_file = data / f"ref.{subset}.{tgt}"
    if not ref_file.is_file():
        logger.warning("no %s: sacreBLEU uses the detokenised targets as references", ref_file)
        return tgt, None, ref_file
    all_refs = read_lines(ref_file)
    if ids[-1] >= len(all_refs):
        raise UserError(f"{ref_file} has {len(all_refs)} lines but the output has sentence id {ids[-1]}")
    return tgt, [all_refs[i] for i in ids], ref_file


def evaluate(args, extra=()):
    """Translate (unless ``args.generate_output``) and score; writes and returns the JSON record."""
    check_options(args)
    data = Path(args.data)
    check_data_folder(data)
    meta = load_prep_meta(data)
    ckpt = resolve_checkpoint(args)
    kept = Path(args.translations_dir) if args.translations_dir else ckpt.parent
    expected = subset_size(data, args.subset)
    if args.generate_output:
        gen_out = Path(args.generate_output)
    else:
        if not any(data.glob("dict.*.txt")):  # fairseq-generate needs them
            raise UserError(
                f"--data {data} is not a fairseq data-bin (it has no dict.*.txt): give the "
                "data-bin the checkpoint was trained on (rskip-prepare's DEST/data-bin)"
            )
        suffix = f".avg{args.avg_last}" if args.avg_last else ""
        gen_out = kept / f"generate-{args.subset}{suffix}.txt"
        run_generate(args, ckpt, meta, gen_out, extra, total=expected)

    hyps, refs = parse_generate_output(gen_out)
    ids = sorted(hyps)
    if expected is not None and len(ids) != expected:
        raise UserError(
            f"{gen_out} translates {len(ids)} of the {expected} sentences of {args.subset}: "
            "BLEU on a part of the test set is not comparable"
        )
    tgt, raw_refs, ref_file = raw_references(data, args.subset, meta, ids)
    res = score([hyps[i] for i in ids], [refs[i] for i in ids], tgt, raw_refs, args.compound_split, args.detok)
    translations, references = kept / f"hyp.{args.subset}.{tgt}", kept / f"ref.{args.subset}.{tgt}"
    write_translations(translations, res["detokenized_hypotheses"])
    write_translations(references, res["references"])
    record = {
        "bleu_tokenized": res["bleu_tokenized"],
        "sacrebleu": res["sacrebleu"],
        "sacrebleu_signature": res["sacrebleu_signature"],
        "chrf": res["chrf"],
        "chrf_signature": res["chrf_signature"],
        "bleu_tokenized_signature": res["bleu_tokenized_signature"],
        "bleu_tokenized_detail": res["bleu_tokenized_detail"],
        "sacrebleu_detail": res["sacrebleu_detail"],
        "chrf_detail": res["chrf_detail"],
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
        "translations": str(translations.resolve()),
        "references_file": str(references.resolve()),
    }
    json_out = Path(args.json_out) if args.json_out else ckpt.parent / f"eval_{args.subset}.json"
    write_json(json_out, record)
    record["json"] = str(json_out)
    return record


def summary_line(record) -> str:
    """The one line ``rskip-evaluate`` prints."""
    return (
        f"BLEU tokenized={record['bleu_tokenized']:.2f} sacrebleu={record['sacrebleu']:.2f} "
        f"chrF={record['chrf']:.2f} "
        f"subset={record['subset']} n={record['num_sentences']} beam={record['beam']} "
        f"lenpen={record['lenpen']} checkpoint={record['checkpoint']} "
        f"signature={record['sacrebleu_signature']} chrf_signature={record['chrf_signature']} "
        f"json={record['json']}"
    )

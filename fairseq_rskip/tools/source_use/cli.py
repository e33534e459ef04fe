"""``rskip-source-use``: how much trained translation models use their source, and their
cross-entropy by target length; see :mod:`fairseq_rskip.tools.source_use.source_use`.

    rskip-source-use --data work/bundled/data-bin \\
        --checkpoint postln=work/runs/postln-d6-s1/checkpoints/checkpoint_last.pt \\
        --checkpoint espa=work/runs/espa-d6-s1/checkpoints/checkpoint_last.pt
"""

import argparse
import csv
import sys
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import check_data_bin, check_pairs, named_files, start_measuring


def build_parser(prog="rskip-source-use"):
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Cross-entropy of trained checkpoints over a whole split, with each target's "
        "own source and with another sentence's, and by target length.")
    p.add_argument("--data", required=True, help="the fairseq data-bin the models were trained on")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                   help="a fairseq checkpoint and the name its rows get (repeat for several; "
                   "a name given several times, e.g. a model's seeds in seed order, is also "
                   "summed up)")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="print A - B checkpoint by checkpoint (the k-th of A with the k-th of B), "
                   "with the mean and 95%% t-interval")
    p.add_argument("--split", default="valid", help="data-bin split (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch")
    p.add_argument("--csv", metavar="FILE", help="also write the rows (model x length bucket) here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def named_checkpoints(items, data: str):
    """``[(name, path)]`` of ``--checkpoint NAME=PATH`` items, the files and ``--data`` checked."""
    named = named_files(items, "--checkpoint")
    check_data_bin(data)
    return named


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    named = named_checkpoints(args.checkpoint, args.data)
    names = [name for name, _ in named]
    check_pairs(args.pair, names, "--checkpoint")
    if args.max_tokens < 1:
        raise UserError(f"--max-tokens must be at least 1; got {args.max_tokens}")
    from fairseq_rskip.tools.source_use import source_use

    start_measuring(args.threads)
    results = []
    for name, path in named:
        model, batches, pad = source_use.load(path, args.data, args.split, args.max_tokens)
        results.append(source_use.measure(model, batches, pad, name))
        write(f"{name}: measured {results[-1].total.sentences} sentences of {args.split}")
    write(source_use.markdown(results))
    if len(set(names)) < len(names):
        write("\nSummed up by name (mean, and range over the checkpoints):\n")
        write(source_use.seed_summary(results))
    for first, second in args.pair:
        write("")
        write(source_use.paired_differences(results, first, second))
    if args.csv:
        rows = source_use.rows(results)
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write(f"wrote {args.csv}")
    return 0


def cli_main():
    run_main(main)


if __name__ == "__main__":
    sys.exit(cli_main())

"""``rskip-reproduce``: compare variants over depths and seeds with fairseq-train and
rskip-evaluate (see :mod:`fairseq_rskip.analysis.runner` and :mod:`~fairseq_rskip.analysis.report`).

    rskip-reproduce --config examples/translation/configs/bundled-cpu.json \
        --data work/bundled/data-bin --out work/repro-bundled

Resumable: run the same command again after a crash; finished runs are skipped.
"""

import argparse
import shlex
import sys

from fairseq_rskip.errors import run_main
from fairseq_rskip.variants import VARIANTS


def build_parser(prog="rskip-reproduce"):
    p = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description="Compare architectures over depths and seeds with fairseq-train and "
        "rskip-evaluate; resumable (finished runs are skipped). Unknown "
        "arguments after -- go to every fairseq-train.",
    )
    p.add_argument("--config", help="JSON configuration (examples/translation/configs/)")
    p.add_argument("--data", help="fairseq data-bin (overrides the configuration's)")
    p.add_argument("--out", required=True, help="output directory (runs, tables, plots)")
    p.add_argument("--archs", nargs="+", help=f"architectures (default: the configuration's; "
                   f"built in: {', '.join(VARIANTS)})")
    p.add_argument("--depths", nargs="+", type=int, help="encoder and decoder layers")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--size", help="size suffix of the architectures: tiny, iwslt_de_en, base, ...")
    p.add_argument("--target-valid-loss", type=float)
    p.add_argument("--threads", type=int,
                   help="OMP_NUM_THREADS of fairseq-train and the evaluation (default: the "
                   "configuration's, else torch's default)")
    p.add_argument("--no-bleu", action="store_true",
                   help="skip the evaluation (BLEU columns read n/a)")
    p.add_argument("--evaluate-command", metavar="CMD",
                   help="evaluation command line, given the options of rskip-evaluate (default: "
                   "rskip-evaluate of this Python)")
    p.add_argument("--dry-run", action="store_true", help="print the fairseq-train commands")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild tables and plots from finished runs; train nothing")
    return p


def main(argv=None) -> int:
    from fairseq_rskip.analysis.runner import Config, reproduce

    args, extra = build_parser().parse_known_args(argv)
    if "--" in extra:
        extra.remove("--")
    config = Config.load(args.config) if args.config else Config()
    if args.depths:
        config.depths = args.depths
    if args.seeds:
        config.seeds = args.seeds
    if args.size is not None:
        config.size = args.size
    if args.threads is not None:
        config.threads = args.threads
    if args.target_valid_loss is not None:
        config.target_valid_loss = args.target_valid_loss
    evaluate_command = shlex.split(args.evaluate_command) if args.evaluate_command else None
    try:
        rows = reproduce(config, args.out, data=args.data, archs=args.archs, extra_args=extra,
                         no_bleu=args.no_bleu, evaluate_command=evaluate_command,
                         dry_run=args.dry_run, report_only=args.report_only)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if any("failed" in row["status"] for row in rows):
        print("some runs failed (see the tables); run again to retry them", file=sys.stderr)
        return 1
    return 0


def cli_main():
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli_main()

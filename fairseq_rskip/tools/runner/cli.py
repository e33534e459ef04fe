"""``rskip-reproduce``: compare variants over depths and seeds with fairseq-train and
rskip-evaluate (see :mod:`fairseq_rskip.tools.runner` and :mod:`~fairseq_rskip.tools.runner.report`).

    rskip-reproduce --config examples/translation/configs/bundled-cpu.json \
        --data work/bundled/data-bin --out work/repro-bundled
    rskip-reproduce --archs postln rskip --size tiny --max-update 300 \
        --data work/bundled/data-bin --out work/repro-tiny

Without ``--config`` the runs train with the built-in recipe of ``--size``
(:mod:`fairseq_rskip.tools.runner.recipes`). Resumable: run the same command again
after a crash; finished runs are skipped. Options after ``--`` go to every fairseq-train.
"""

import argparse
import shlex
import sys

from fairseq_rskip.tools.runner.config import SCORED_CHECKPOINTS
from fairseq_rskip.tools.runner.recipes import recipe_config, recipe_sizes
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import quiet_root_logger
from fairseq_rskip.variants import VARIANTS


def build_parser(prog="rskip-reproduce"):
    p = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        usage=f"{prog} [options] [-- FAIRSEQ_TRAIN_OPTIONS]",
        description="Compare architectures over depths and seeds with fairseq-train and "
        "rskip-evaluate; resumable (finished runs are skipped). Without --config the runs "
        "train with the built-in recipe of --size (optimizer, criterion, batch, budget, "
        f"evaluation; sizes: {', '.join(recipe_sizes())}). Options after -- go to every "
        "fairseq-train (after the variant's flags); those the runner sets itself (--seed, "
        "--save-dir, --arch, --lr, ...) are refused with the option to use instead.",
    )
    p.add_argument("--config", help="JSON configuration (examples/translation/configs/); "
                   "default: the built-in recipe of --size")
    p.add_argument("--data", help="fairseq data-bin (overrides the configuration's)")
    p.add_argument("--out", required=True, help="output directory (runs, tables, plots)")
    p.add_argument("--archs", nargs="+", help=f"architectures (default: the configuration's; "
                   f"built in: {', '.join(VARIANTS)})")
    p.add_argument("--depths", nargs="+", type=int, help="encoder and decoder layers")
    p.add_argument("--seeds", nargs="+", type=int,
                   help="fairseq-train --seed of the runs, one run per seed (default: the "
                   "configuration's; without --config, 1)")
    p.add_argument("--size", help="size suffix of the architectures: tiny, iwslt_de_en, base, "
                   "... (default: the configuration's; without --config, tiny); without "
                   "--config it also picks the recipe: tiny the bundled demo's, iwslt_de_en "
                   "the IWSLT'14 paper recipe, base/wmt_en_de and (vaswani_)wmt_en_de_big "
                   "fairseq's WMT'14 En-De recipes")
    p.add_argument("--max-update", type=int, metavar="N",
                   help="train every run for N updates (replaces the recipe's or the "
                   "configuration's budget)")
    p.add_argument("--max-epoch", type=int, metavar="N",
                   help="train every run for N epochs (replaces the recipe's or the "
                   "configuration's budget; with --max-update, whichever comes first)")
    p.add_argument("--target-valid-loss", type=float)
    p.add_argument("--threads", type=int,
                   help="OMP_NUM_THREADS of fairseq-train and the evaluation (default: the "
                   "configuration's, else torch's default)")
    p.add_argument("--no-bleu", action="store_true",
                   help="skip the evaluation (BLEU columns read n/a)")
    p.add_argument("--eval-checkpoint", choices=SCORED_CHECKPOINTS,
                   help="the checkpoint each run's BLEU is measured on: best (lowest validation "
                   "loss, checkpoint_best.pt) or last (the end of the budget, checkpoint_last.pt); "
                   "default: the configuration's \"checkpoint\" in \"eval\", else best")
    p.add_argument("--evaluate-command", metavar="CMD",
                   help="evaluation command line, given the options of rskip-evaluate (default: "
                   "rskip-evaluate of this Python)")
    p.add_argument("--train-command", metavar="CMD",
                   help="training command line in place of fairseq-train, given its arguments "
                   "(default: fairseq-train of this Python)")
    p.add_argument("--rerun-changed", action="store_true",
                   help="when a run's folder holds a run made with other settings, train the "
                   "run into a new folder beside it (runs/<run>-<id>) instead of stopping")
    p.add_argument("--dry-run", action="store_true", help="print the fairseq-train commands")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild tables and plots from finished runs; train nothing")
    return p


def split_at_double_dash(argv):
    """``(the runner's options, the options after --)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def main(argv=None) -> int:
    from fairseq_rskip.tools.runner import RUNNER_OPTIONS, Config, Interrupted, reproduce

    quiet_root_logger()  # the runner's own lines are printed, not logged
    own, extra = split_at_double_dash(argv)
    args, unknown = build_parser().parse_known_args(own)
    if unknown:
        hint = next((f"; {u} is set by the runner: use {RUNNER_OPTIONS[u.split('=')[0]]}"
                     for u in unknown if u.split("=")[0] in RUNNER_OPTIONS), "")
        raise UserError(
            f"unknown option(s) {' '.join(unknown)}: options for fairseq-train go after -- "
            f"(rskip-reproduce ... -- --max-update 100){hint}"
        )
    if args.config:
        config = Config.load(args.config)
    else:
        config = recipe_config(args.size or Config.size)
        print(f"recipe: {config.name}, built in for --size {config.size} (--config FILE "
              f"gives another): {config.description}", flush=True)
    config = config.with_budget(args.max_update, args.max_epoch)
    if not args.config and args.max_update is not None and args.max_update < config.warmup_updates:
        print(f"warning: --max-update {args.max_update} ends before the recipe's "
              f"{config.warmup_updates} warm-up updates: its models will not yet translate, and "
              "the report will name their translations degenerate", file=sys.stderr, flush=True)
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
    if args.eval_checkpoint is not None and config.eval is not None:
        config.eval = {**config.eval, "checkpoint": args.eval_checkpoint}
    evaluate_command = shlex.split(args.evaluate_command) if args.evaluate_command else None
    train_program = shlex.split(args.train_command) if args.train_command else None
    try:
        rows = reproduce(config, args.out, data=args.data, archs=args.archs, extra_args=extra,
                         no_bleu=args.no_bleu, evaluate_command=evaluate_command,
                         dry_run=args.dry_run, report_only=args.report_only,
                         rerun_changed=args.rerun_changed, train_program=train_program)
    except Interrupted as err:
        print(f"interrupted ({err.name}); run the same command again to resume", file=sys.stderr)
        return 128 + err.signum
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

"""``rskip-output-change``: how far one optimiser update (or a small random perturbation) moves
the decoder's output at initialisation, per variant and depth, on real batches (Liu et al. 2020's
amplification of output changes); see :mod:`fairseq_rskip.tools.output_change.output_change`.

    rskip-output-change --data work/bundled/data-bin --out work/output-change
"""

import argparse
import math
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import (add_study_arguments, check_study_arguments,
                                                  start_measuring)


def build_parser(prog="rskip-output-change"):
    from fairseq_rskip.tools.output_change.output_change import DEFAULT_VARIANTS

    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Change of the decoder's output |F(x, W*) - F(x, W)| / |F(x, W)| after one Adam "
        "update on a real batch and after a random perturbation of the residual branches, per "
        "variant and depth, at initialisation (Liu et al. 2020). Other arguments are model flags "
        "for every variant.")
    add_study_arguments(p, "work/output-change", DEFAULT_VARIANTS, " ".join(DEFAULT_VARIANTS),
                        [6, 12, 18])
    p.add_argument("--embed-dim", type=int, default=256, help="model width")
    p.add_argument("--ffn-dim", type=int, default=1024, help="feed-forward width")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--split", default="train", help="the data-bin split the batches come from")
    p.add_argument("--max-tokens", type=int, default=1024, help="tokens per batch")
    p.add_argument("--batches", type=int, default=2, help="batches to average over")
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate of the one Adam update")
    p.add_argument("--perturbation", type=float, default=0.01,
                   help="relative size eps of the random perturbation: W += eps * rms(W) * N(0, 1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv=None) -> int:
    from fairseq_rskip.tools.output_change import output_change as oc

    args, extra = build_parser().parse_known_args(argv)
    check_study_arguments(args)
    if args.batches < 1:
        raise UserError(f"--batches must be at least 1; got {args.batches}")
    for flag, value in (("--lr", args.lr), ("--perturbation", args.perturbation)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag} must be a finite number > 0; got {value}")
    depths = sorted(set(args.depths))
    variants = list(dict.fromkeys(args.variants))
    start_measuring(args.threads)
    records = oc.run(args.data, variants, depths, (args.embed_dim, args.ffn_dim, args.heads),
                     extra=extra, split=args.split, max_tokens=args.max_tokens, batches=args.batches,
                     lr=args.lr, eps=args.perturbation, seed=args.seed)
    for path in oc.write_outputs(records, Path(args.out), depths, variants):
        write(f"wrote {path}")
    write(oc.markdown(records, depths, variants))
    return 0


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

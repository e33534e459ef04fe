"""``rskip-warmup-demo``: Post-LN vs Pre-LN at a high learning rate without warm-up
(Xiong et al. 2020); see :mod:`fairseq_rskip.tools.warmup.warmup`.

    rskip-warmup-demo --out work/warmup-demo
"""

import argparse
from pathlib import Path

from fairseq_rskip.errors import run_main
from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import start_measuring


def build_parser(runs, prog="rskip-warmup-demo"):
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Post-LN vs Pre-LN at a high learning rate without warm-up "
        "(Xiong et al. 2020), on small deep models and the synthetic corpus.")
    p.add_argument("--runs", nargs="+", choices=list(runs),
                   default=["postln-nowarmup", "preln-nowarmup", "postln-warmup"])
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--timescale", type=float, default=100,
                   help="warm-up updates (warmup) / decay timescale T (nowarmup)")
    p.add_argument("--updates", type=int, default=150)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="work/warmup-demo")
    return p


def main(argv=None) -> int:
    from fairseq_rskip.tools.warmup.warmup import RUNS, demo, plot

    args = build_parser(RUNS).parse_args(argv)
    start_measuring(args.threads)
    results = demo(args.runs, args.depth, args.dim, args.lrs, args.timescale, args.updates,
                   args.eval_every, args.seed)
    out = Path(args.out)
    write_json(out / "warmup_demo.json", results)
    write(f"wrote {plot(results, out / 'warmup_demo.png')} and {out / 'warmup_demo.json'}")
    return 0


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

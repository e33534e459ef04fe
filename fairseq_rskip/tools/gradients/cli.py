"""``rskip-gradient-analysis``: per-sublayer gradient norms against layer index (Liu et al. 2020);
see :mod:`fairseq_rskip.tools.gradients.gradients`.

    rskip-gradient-analysis --sweep all --out work/gradient-analysis
"""

import argparse
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import start_measuring


def build_parser(prog="rskip-gradient-analysis"):
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Per-sublayer gradient norms against layer index (Liu et al. 2020): "
        "skip scale with and without LN, rSkip recursions, depth (every variant of "
        "fairseq_rskip/variants.py).")
    p.add_argument("--sweep", choices=["scale", "recursion", "depth", "deep", "all"], default="all",
                   help="all = scale, recursion and depth (every variant of the table, DeepNorm "
                   "and Admin included); deep = Post-LN, DeepNorm and Admin over --depths")
    p.add_argument("--out", default="work/gradient-analysis", help="output directory")
    p.add_argument("--depth", type=int, default=6, help="depth of the scale and recursion sweeps")
    p.add_argument("--depths", type=int, nargs="+", default=[6, 12, 18, 24], help="depth sweep")
    p.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4])
    p.add_argument("--depth-sweep-scale", type=float, default=2.0,
                   help="lam of the xSkip settings in the depth sweep")
    p.add_argument("--recursions", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--updates", type=int, nargs="+", default=[0, 100],
                   help="measure at initialisation (0) and after these numbers of updates")
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--ffn-dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--band", type=float, default=10.0,
                   help="band factor: a sublayer is out of band when its norm is more than "
                   "BAND times larger or smaller than the top sublayer's")
    p.add_argument("--metric", choices=["output", "weight"], default="output")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is robust on a shared machine)")
    return p


def main(argv=None) -> int:
    from fairseq_rskip.tools.gradients import gradients as ga

    args = build_parser().parse_args(argv)
    if min(args.updates) < 0:
        raise UserError("--updates must be >= 0")
    start_measuring(args.threads)
    size = ga.ModelSize(args.embed_dim, args.ffn_dim, args.heads)
    sweeps = {
        "scale": lambda: ga.scale_sweep(args.depth, args.scales),
        "recursion": lambda: ga.recursion_sweep(args.depth, args.recursions),
        "depth": lambda: ga.depth_sweep(args.depths, args.depth_sweep_scale),
        "deep": lambda: ga.deep_sweep(args.depths),
    }
    out = Path(args.out)
    for name in (["scale", "recursion", "depth"] if args.sweep == "all" else [args.sweep]):
        write(f"== {name} sweep ==")
        results = ga.analyse(sweeps[name](), args.updates, size, band=args.band, seed=args.seed,
                             lr=args.lr, warmup=args.warmup)
        for path in ga.write_outputs(out, name, results, args.metric):
            write(f"wrote {path}")
    return 0


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

"""``rskip-gpu-check``: on a GPU machine, that every family trains and decodes
along fairseq's GPU paths; see :mod:`fairseq_rskip.tools.gpu_check.checks`.

    rskip-gpu-check --out work/gpu-check
"""

import argparse
import sys
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import check_data_bin


def build_parser(prog="rskip-gpu-check"):
    from fairseq_rskip.tools.gpu_check.checks import CHECKS, UPDATES
    from fairseq_rskip.variants import family_rows

    checks = "\n".join(f"  {name:<11} {what}" for name, what in CHECKS.items())
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check that every family of the table of variants trains and decodes on this "
        f"machine's GPUs: stock fairseq-train, {UPDATES} updates of each family's tiny size on a "
        "small synthetic corpus, against float32 training of the same batches; a few minutes. "
        "Writes report.md and the runs' logs to --out; exit status 1 if a check fails, 2 without a GPU.",
        epilog="checks:\n" + checks)
    p.add_argument("--out", default="work/gpu-check", help="output folder (default: %(default)s)")
    p.add_argument("--checks", nargs="+", choices=list(CHECKS), default=list(CHECKS),
                   help="checks to run (default: all)")
    p.add_argument("--rows", nargs="+", default=family_rows("tiny"),
                   help="rows of the table of variants (default: one per family)")
    p.add_argument("--data", help="a fairseq data-bin to train and decode (default: a small "
                   "synthetic corpus made in --out)")
    p.add_argument("--max-tokens", type=int, default=400, help="tokens a batch (default: %(default)s)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu runs the checks' CPU paths (--fp16 without flattening, --amp in float32, "
                   "no DDP, benchmark --quick): for testing this tool, not the GPU paths")
    return p


def main(argv=None) -> int:
    import torch

    from fairseq_rskip.tools.gpu_check import checks as gpu_check
    from fairseq_rskip.variants import VARIANTS

    args = build_parser().parse_args(argv)
    unknown = [r for r in args.rows if r not in VARIANTS]
    if unknown:
        raise UserError(f"--rows {' '.join(unknown)}: not rows of the table of variants "
                        f"({', '.join(VARIANTS)})")
    if args.device == "cuda" and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise UserError(f"no GPU: torch {torch.__version__} ({build}) sees no CUDA device "
                        "(torch.cuda.is_available() is False); run this on a GPU machine")
    out = Path(args.out)
    for line in gpu_check.machine_lines(args.device):
        write(line)
    if args.data:
        check_data_bin(args.data)
    outcomes = gpu_check.run_checks(out, args.rows, args.checks, args.device,
                                    Path(args.data) if args.data else None, args.max_tokens)
    text = gpu_check.report(outcomes, args.device)
    (out / "report.md").write_text(text)
    write(text)
    write(f"wrote {out / 'report.md'}")
    return 1 if any(o.ok is False for o in outcomes) else 0


def cli_main():
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli_main()

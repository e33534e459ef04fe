"""``rskip-benchmark``: training throughput, generation speed and peak memory of the
variants against fairseq's stock transformer; what is measured and how:
:mod:`fairseq_rskip.tools.benchmark.throughput`. Prints figures (not a test).

    rskip-benchmark                 # iwslt_de_en size, CPU
    rskip-benchmark --quick         # smoke test, seconds
    rskip-benchmark --sweep length width depth --plot cost_sweep.png
    rskip-benchmark --device cuda --precision fp16   # on a GPU
"""

import argparse
import json
import sys
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import quiet_root_logger
from fairseq_rskip.tools.benchmark import throughput
from fairseq_rskip.tools.benchmark.measure import PRECISIONS, compare, memory_of
from fairseq_rskip.tools.benchmark.report import plot_sweep, report, report_sweep
from fairseq_rskip.tools.benchmark.throughput import SWEEP_AXES, comparison_names, run, run_sweep
from fairseq_rskip.tools.common.child_process import print_result
from fairseq_rskip.tools.common.machine import machine_description
from fairseq_rskip.variants import plugin_rows


def parse(argv=None):
    p = argparse.ArgumentParser(description=throughput.__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--archs", nargs="+", choices=plugin_rows(), default=plugin_rows(),
                   help="the candidates (default: every variant of fairseq_rskip/variants.py that is "
                   "not fairseq's own)")
    p.add_argument("--size", default="iwslt_de_en", help="size suffix: iwslt_de_en, tiny, base, ...")
    p.add_argument("--layers", type=int, help="encoder and decoder layers (default: the size's)")
    p.add_argument("--data", help="data-bin (default work/bundled/data-bin of the current directory, "
                   "if present)")
    p.add_argument("--split", default="valid")
    p.add_argument("--vocab", type=int, default=10000, help="dictionary size without --data")
    p.add_argument("--random-len", type=int, default=25)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--gen-sentences", type=int, default=16)
    p.add_argument("--gen-len", type=int, default=20)
    p.add_argument("--gen-repeats", type=int, default=1)
    p.add_argument("--mem-reps", type=int, default=3, help="0: no memory measurement")
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--flush-denormal", action="store_true",
                   help="CPU: treat subnormal floats as zero (torch.set_flush_denormal), to see "
                        "what they cost; training with fairseq-train keeps them")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32",
                   help="fp16/bf16: torch.autocast with float32 weights (fairseq's --amp)")
    p.add_argument("--sweep", nargs="+", choices=SWEEP_AXES,
                   help="repeat the comparison while each of these axes grows (no memory part)")
    p.add_argument("--sweep-lengths", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--sweep-depths", type=int, nargs="+", default=[3, 6, 12])
    p.add_argument("--sweep-sizes", nargs="+", default=["iwslt_de_en", "wmt_en_de"])
    p.add_argument("--plot", help="with --sweep: write the figure here")
    p.add_argument("--json-out", help="write the figures as JSON")
    p.add_argument("--comparison-child", help=argparse.SUPPRESS)
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    p.add_argument("--point-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-opts", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny size, 2 repetitions of 2 updates, small generation")
    opts = p.parse_args(argv)
    if opts.quick:
        opts.size, opts.max_tokens, opts.reps, opts.steps = "tiny", 256, 2, 2
        opts.gen_sentences, opts.gen_len, opts.mem_reps, opts.mem_steps = 4, 5, 1, 1
        opts.vocab = 500
    if opts.data is None and not opts.quick and Path("work/bundled/data-bin").is_dir():
        opts.data = "work/bundled/data-bin"
    return opts


def child_main(opts):
    """The figures a child process hands back: one comparison's, one model's memory, or
    one sweep point's."""
    child = argparse.Namespace(**json.loads(opts.child_opts))
    if opts.comparison_child:
        return compare(comparison_names(opts.comparison_child, child.archs), child)
    if opts.memory_child:
        return memory_of(opts.memory_child, child)
    return run(child)


def main(argv=None) -> int:
    opts = parse(argv)
    if opts.comparison_child or opts.memory_child or opts.point_child:
        print_result(child_main(opts))
        return 0
    quiet_root_logger()
    import torch

    print(f"benchmark_throughput: {machine_description()}", flush=True)
    if opts.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False)")
    if opts.sweep:
        rows = run_sweep(opts)
        report_sweep(rows, opts)
        if opts.plot:
            print(f"wrote {plot_sweep(rows, opts.plot, opts)}")
        if opts.json_out:
            write_json(opts.json_out, {"options": vars(opts), "sweep": rows})
        return 0
    result = run(opts)
    ok = report(result, opts)
    print(f"all targets met: {ok}")
    if opts.json_out:
        write_json(opts.json_out, {"options": vars(opts), **result, "all_targets_met": ok})
    return 0


def cli_main(argv=None) -> int:
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli_main())

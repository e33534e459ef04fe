"""``rskip-signal-propagation``: rank collapse at initialisation, the mean pairwise cosine
similarity of token representations per layer, for every variant and depth, on real
batches (He et al. 2023); see :mod:`fairseq_rskip.tools.signal_propagation.signal_propagation`.

    rskip-signal-propagation --data work/bundled/data-bin --out work/signal-propagation
"""

import argparse
from pathlib import Path

from fairseq_rskip.errors import run_main
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.study_cli import (add_study_arguments, check_study_arguments,
                                                  start_measuring)


def build_parser(prog="rskip-signal-propagation"):
    from fairseq_rskip.tools.signal_propagation.signal_propagation import default_variants

    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Mean pairwise cosine similarity of token representations per layer, at "
        "initialisation, on real batches: rank collapse of vanilla Transformers and its cures. "
        "Other arguments (e.g. --encoder-embed-dim 256) are model flags for every variant.")
    add_study_arguments(p, "work/signal-propagation", default_variants(), "every distinct model",
                        [6, 12, 24, 48])
    p.add_argument("--size", default="iwslt_de_en", help="fairseq size suffix of the architectures")
    p.add_argument("--split", default="valid")
    p.add_argument("--max-tokens", type=int, default=1024, help="tokens per batch")
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-mode", action="store_true",
                   help="measure in training mode (dropout on, as the first update sees the model)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return p


def main(argv=None) -> int:
    from fairseq_rskip.tools.signal_propagation import signal_propagation as sp

    args, extra = build_parser().parse_known_args(argv)
    check_study_arguments(args)
    start_measuring(args.threads)
    records = sp.run(args.data, args.variants, args.depths, size=args.size, extra=extra,
                     split=args.split, max_tokens=args.max_tokens, batches=args.batches,
                     seed=args.seed, train_mode=args.train_mode)
    for path in sp.write_outputs(records, Path(args.out), args.depths, args.variants):
        write(f"wrote {path}")
    write(sp.markdown(records, args.depths, args.variants))
    return 0


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

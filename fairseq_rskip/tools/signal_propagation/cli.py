"""``rskip-signal-propagation``: rank collapse at initialisation, the mean pairwise cosine
similarity of token representations per layer, for every variant and depth, on real
batches (He et al. 2023); see :mod:`fairseq_rskip.tools.signal_propagation.signal_propagation`.

    rskip-signal-propagation --data work/bundled/data-bin --out work/signal-propagation
"""

import argparse
import logging
import sys
from pathlib import Path

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.progress import write
from fairseq_rskip.variants import VARIANTS


def build_parser(prog="rskip-signal-propagation"):
    from fairseq_rskip.tools.signal_propagation.signal_propagation import default_variants

    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Mean pairwise cosine similarity of token representations per layer, at "
        "initialisation, on real batches: rank collapse of vanilla Transformers and its cures. "
        "Other arguments (e.g. --encoder-embed-dim 256) are model flags for every variant.")
    p.add_argument("--data", required=True, help="a fairseq data-bin (e.g. the bundled corpus)")
    p.add_argument("--out", default="work/signal-propagation", help="output directory")
    p.add_argument("--variants", nargs="+", default=default_variants(), choices=list(VARIANTS),
                   help="rows of fairseq_rskip/variants.py (default: every distinct model)")
    p.add_argument("--depths", type=int, nargs="+", default=[6, 12, 24, 48],
                   help="layers of the encoder and of the decoder")
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
    import torch

    from fairseq_rskip.tools.signal_propagation import signal_propagation as sp

    args, extra = build_parser().parse_known_args(argv)
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such data-bin folder")
    if min(args.depths) < 1:
        raise UserError(f"--depths must be positive; got {args.depths}")
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
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

"""The command-line pieces the analysis tools share: the arguments of a study over
variants and depths on a data-bin, their checks, and the process set-up before
measuring (torch's CPU threads, the root logger at WARNING: importing fairseq
sets it to DEBUG).
"""

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from fairseq_rskip.errors import UserError


def add_study_arguments(p: argparse.ArgumentParser, out: str, variants: Sequence[str],
                        variants_help: str, depths: Sequence[int]) -> None:
    """``--data``, ``--out``, ``--variants`` (rows of the variant table) and ``--depths``."""
    from fairseq_rskip.variants import VARIANTS

    p.add_argument("--data", required=True, help="a fairseq data-bin (e.g. the bundled corpus)")
    p.add_argument("--out", default=out, help="output directory")
    p.add_argument("--variants", nargs="+", default=list(variants), choices=list(VARIANTS),
                   help=f"rows of fairseq_rskip/variants.py (default: {variants_help})")
    p.add_argument("--depths", type=int, nargs="+", default=list(depths),
                   help="layers of the encoder and of the decoder")


def check_study_arguments(args: argparse.Namespace) -> None:
    """Refuse a missing ``--data`` folder and a depth below 1, each in one line."""
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such data-bin folder")
    if min(args.depths) < 1:
        raise UserError(f"--depths must be positive; got {args.depths}")


def start_measuring(threads: int) -> None:
    """Set torch's CPU threads and put the root logger back to WARNING on stderr."""
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)

"""The command-line pieces the analysis tools share: the arguments of a study over
variants and depths on a data-bin, their checks, the process set-up before
measuring (torch's CPU threads, the root logger at WARNING: importing fairseq
sets it to DEBUG), and named files (``--checkpoint NAME=PATH``) with the
``--pair A B`` comparisons over them.
"""

import argparse
from pathlib import Path
from typing import List, Sequence, Tuple

from fairseq_rskip.errors import UserError
from fairseq_rskip.progress import quiet_root_logger


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


def check_data_bin(data: str) -> None:
    """Refuse a ``--data`` that is not a folder, in one line."""
    if not Path(data).is_dir():
        raise UserError(f"--data {data}: no such data-bin folder")


def check_study_arguments(args: argparse.Namespace) -> None:
    """Refuse a missing ``--data`` folder and a depth below 1, each in one line."""
    check_data_bin(args.data)
    if min(args.depths) < 1:
        raise UserError(f"--depths must be positive; got {args.depths}")


def start_measuring(threads: int) -> None:
    """Set torch's CPU threads and put the root logger back to WARNING on stderr."""
    import torch

    torch.set_num_threads(threads)
    quiet_root_logger()


def named_files(items: Sequence[str], flag: str, folders: bool = False) -> List[Tuple[str, str]]:
    """``[(name, path)]`` of ``FLAG NAME=PATH`` items, in the order given, each file (each
    folder with ``folders``) checked."""
    named = [item.split("=", 1) for item in items]
    for item, pair in zip(items, named):
        if len(pair) != 2 or not all(pair):
            raise UserError(f"{flag} takes NAME={'DIR' if folders else 'PATH'}; got {item}")
        if not (Path(pair[1]).is_dir() if folders else Path(pair[1]).is_file()):
            raise UserError(f"{flag} {pair[1]}: no such {'folder' if folders else 'file'}")
    return [tuple(pair) for pair in named]


def check_pairs(pairs: Sequence[Sequence[str]], names: Sequence[str], flag: str) -> None:
    """Each ``--pair A B`` names two names given with ``flag``, as many times each (the
    k-th of A is paired with the k-th of B)."""
    for first, second in pairs:
        for name in (first, second):
            if name not in names:
                raise UserError(f"--pair {first} {second}: no {flag} named {name}")
        if names.count(first) != names.count(second):
            raise UserError(f"--pair {first} {second}: {names.count(first)} and {names.count(second)} "
                            f"{flag} items; pairs need as many of each")

"""Let fairseq checkpoints load under ``torch.load(weights_only=True)``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` by default,
which refuses every class not on its allow-list. A fairseq checkpoint holds
tensors, containers and plain values, plus the objects listed in
``FAIRSEQ_CHECKPOINT_GLOBALS``; those, and nothing else, are allowed when the
plugin is imported. ``tests/test_cli.py`` trains with the stock tools
and checks that the checkpoints need exactly this list.
"""

import argparse

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

FAIRSEQ_CHECKPOINT_GLOBALS = (
    # cfg["model"]: the argparse.Namespace of an args-based ("legacy") model
    # such as fairseq's ``transformer`` and ours
    argparse.Namespace,
    # extra_state["metrics"] with --eval-bleu: the translation task logs its
    # BLEU n-gram counts and totals as int64 numpy arrays
    _reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.int64)),
)


def allow_fairseq_checkpoint_globals() -> None:
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))

"""Let fairseq checkpoints load under ``torch.load(weights_only=True)``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` by default,
which refuses every class not on its allow-list. A fairseq checkpoint holds
tensors, containers and plain values, plus the objects listed in
``FAIRSEQ_CHECKPOINT_GLOBALS``; those, and nothing else, are allowed when the
plugin is imported. ``tests/test_checkpoints.py`` trains with the stock
tools and checks that this list is exactly what the checkpoints need.
"""

import argparse

import torch

# The legacy model configuration: cfg["model"] is the argparse.Namespace of
# an args-based model such as fairseq's ``transformer`` and ours.
FAIRSEQ_CHECKPOINT_GLOBALS = (argparse.Namespace,)


def allow_fairseq_checkpoint_globals() -> None:
    torch.serialization.add_safe_globals(list(FAIRSEQ_CHECKPOINT_GLOBALS))

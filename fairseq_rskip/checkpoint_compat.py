"""Let fairseq checkpoints load under ``torch.load(weights_only=True)``.

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` by default,
which refuses every class not on its allow-list. A fairseq checkpoint holds
tensors, containers and plain values, plus the objects listed in
``FAIRSEQ_CHECKPOINT_GLOBALS``; those, and nothing else, are allowed when the
plugin is imported. ``tests/test_cli.py`` trains with the stock tools
and checks that the checkpoints need exactly this list.

:func:`load_checkpoint` (the tools' loader), :func:`check_checkpoint_file` and
:func:`explain_load_error` turn a checkpoint that does not load (an empty or
damaged file, another kind of file, a fairseq command without ``--user-dir``)
into a message that names the cause and the fix.
"""

import argparse
import zipfile
from pathlib import Path
from typing import Optional

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


# ----------------------------------------------------------------------------
# what the tools say when a checkpoint does not load


def check_checkpoint_file(path) -> None:
    """Refuse (:class:`~fairseq_rskip.errors.UserError`) a file that cannot be a checkpoint:
    missing, empty, or neither a zip archive (``torch.save`` since torch 1.6) nor a pickle
    (``torch.save`` before)."""
    from fairseq_rskip.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(
            f"{path} is empty (0 bytes), not a checkpoint: the save that wrote it was "
            "probably interrupted; use another checkpoint (checkpoint_last.pt, an earlier "
            "checkpointN.pt) or train again"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise UserError(
            f"{path} is not a PyTorch checkpoint (it begins with {head!r}; torch.save writes "
            "a zip archive): give a checkpoint that fairseq-train saved"
        )
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise UserError(_damaged(path))


def _damaged(path) -> str:
    return (f"{path} is damaged (a truncated or corrupted zip archive): the save that wrote it "
            "was probably interrupted, or the copy is incomplete; use another checkpoint")


def explain_load_error(path, message: str) -> Optional[str]:
    """The cause of a failed ``torch.load`` of ``path`` and its fix, from the error's
    ``message`` (or a command's output that holds it); None when it is not one we know."""
    if "Weights only load failed" in message and "argparse.Namespace" in message:
        from fairseq_rskip.fairseq_tools import PLUGIN_DIR

        return (
            f"{path} is a fairseq checkpoint, which holds an argparse.Namespace: torch >= 2.6 "
            "loads checkpoints weights-only and refuses it unless fairseq_rskip is imported "
            "(it allow-lists fairseq's checkpoint types). Give the fairseq command --user-dir "
            f"{PLUGIN_DIR}, or import fairseq_rskip before loading the checkpoint in Python"
        )
    if "PytorchStreamReader failed" in message:
        return _damaged(path)
    return None


def load_checkpoint(path) -> dict:
    """``torch.load(path)`` on the CPU, weights-only with :data:`FAIRSEQ_CHECKPOINT_GLOBALS`;
    a file that does not load is a UserError naming the cause and the fix."""
    from fairseq_rskip.errors import UserError

    check_checkpoint_file(path)
    allow_fairseq_checkpoint_globals()
    try:
        return torch.load(path, map_location="cpu")  # weights_only=True (torch default)
    except Exception as err:  # noqa: BLE001 (reported to the user with its cause)
        message = f"{type(err).__name__}: {err}"
        explanation = explain_load_error(path, message)
        raise UserError(explanation or f"cannot load {path} as a checkpoint: "
                        f"{message.splitlines()[0]}") from None

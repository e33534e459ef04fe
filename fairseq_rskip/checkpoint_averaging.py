"""Average the parameters of fairseq checkpoints (``rskip-average-checkpoints``).

fairseq's own ``average_checkpoints.py`` (a script in fairseq's repository)
is not installed with fairseq, and its bare ``torch.load`` fails on fairseq
checkpoints under torch >= 2.6. This is that script's ``average_checkpoints`` and
``last_n_checkpoints`` (fairseq 0.12.3.1), loading with ``weights_only=True``
and the allow-list of :mod:`fairseq_rskip.checkpoint_compat` (its ``load_checkpoint``,
which names the cause of a file that does not load). What differs:
sums are kept in float64 and cast back to each parameter's dtype (fairseq:
float32 for half tensors, the tensor's own dtype otherwise), integer buffers
are taken from the first checkpoint instead of divided, and problems are
:class:`~fairseq_rskip.errors.UserError` messages instead of assertions.
"""

import collections
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from fairseq_rskip.checkpoint_compat import load_checkpoint
from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import atomic_output

EPOCH_CHECKPOINT = re.compile(r"checkpoint(\d+)\.pt")
UPDATE_CHECKPOINT = re.compile(r"checkpoint_\d+_(\d+)\.pt")


def last_n_checkpoints(folder, n: int, update_based: bool, upper_bound: Optional[int] = None) -> List[str]:
    """The last ``n`` epoch (``checkpointEPOCH.pt``) or update (``checkpoint_EPOCH_UPDATE.pt``)
    checkpoints in ``folder``, newest first, ignoring those after ``upper_bound``."""
    pattern = UPDATE_CHECKPOINT if update_based else EPOCH_CHECKPOINT
    if not os.path.isdir(folder):
        raise UserError(f"{folder} is not a folder: --num-*-checkpoints N averages the last N "
                        "checkpoints of the folder given in --inputs")
    found = []
    for name in os.listdir(folder):
        m = pattern.fullmatch(name)
        if m:
            step = int(m.group(1))
            if upper_bound is None or step <= upper_bound:
                found.append((step, os.path.join(folder, name)))
    if len(found) < n:
        raise UserError(f"found {len(found)} checkpoints in {folder} matching {pattern.pattern}, need {n}")
    return [path for _, path in sorted(found, reverse=True)[:n]]


def average_checkpoints(inputs: Sequence[str]) -> dict:
    """The state of the first checkpoint with 'model' replaced by the mean over all."""
    state = None
    sums = collections.OrderedDict()
    for path in inputs:
        ckpt = load_checkpoint(path)
        if state is None:
            state = ckpt
        params = ckpt["model"]
        if set(params) != set(sums) and sums:
            raise UserError(f"{path} has other parameters than {inputs[0]}")
        for key, value in params.items():
            value = value.double() if value.is_floating_point() else value
            sums[key] = sums[key] + value if key in sums else value.clone()
    averaged = collections.OrderedDict()
    for key, total in sums.items():
        reference = state["model"][key]
        if reference.is_floating_point():
            averaged[key] = (total / len(inputs)).to(reference.dtype)
        else:
            averaged[key] = reference  # integer buffers (e.g. version) are not averaged
    state["model"] = averaged
    return state


def write_average(inputs: Sequence[str], output) -> Path:
    """Average ``inputs`` into the checkpoint ``output``, written atomically."""
    for path in inputs:
        if os.path.isdir(path):
            raise UserError(
                f"{path} is a folder: give --num-epoch-checkpoints N or --num-update-checkpoints N "
                "to average its last N checkpoints, or list the checkpoint files in --inputs"
            )
        if not os.path.isfile(path):
            raise UserError(f"no checkpoint file {path}")
    state = average_checkpoints(inputs)
    output = Path(output)
    with atomic_output(output) as tmp:
        torch.save(state, tmp)
    return output

"""Admin's profile as a file: Transformer-Clinic's ``profile.ratio.init``.

One line per Admin sublayer, ``INDEX VALUE``: first the encoder's ``2N``
lines (index ``2l+1`` the self-attention, ``2l+2`` the feed-forward of layer
``l``, from 0), then the decoder's ``3M`` lines (``3l+1`` self-attention,
``3l+2`` cross-attention, ``3l+3`` feed-forward; ``2l+1``, ``2l+2`` with
``--no-cross-attention``). Each value fills every entry of that sublayer's
``omega``. So within a stack the index counts the sublayers from 1 in the
order of the forward pass.

A run that profiles writes the file into its ``--save-dir``
(:func:`write_profile`, data-parallel rank 0); ``--admin-profile FILE`` starts
a model from it (:func:`start_from_profile_`), as Transformer-Clinic's
``--init-type adaptive`` does, and reads its files, admin-torch's (the same
format) and ours alike.
"""

import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence

import torch

from fairseq_rskip.errors import UserError
from fairseq_rskip.modules.skip_weights import STACKS, admin_residual_norms

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.ratio.init"


def profile_norms(model) -> Dict[str, list]:
    """The Admin ``ResidualNorm``s of each stack of ``model``, in the order of the file."""
    return {stack: admin_residual_norms(getattr(model, stack)) for stack in STACKS}


def format_profile(values: Dict[str, Sequence[float]]) -> str:
    """The file's text: ``INDEX VALUE`` lines, encoder then decoder, each from index 1;
    values as Python's shortest round-trip form of the float."""
    return "".join(f"{i} {float(v)!r}\n" for stack in STACKS for i, v in enumerate(values[stack], 1))


def write_profile(values: Dict[str, Sequence[float]], folder) -> Path:
    """Write the omegas per stack (the profiling's values, unrounded where the
    model holds them in half precision) to ``folder/profile.ratio.init``
    (atomically)."""
    from fairseq_rskip.file_io import atomic_output

    path = Path(folder) / PROFILE_FILE
    with atomic_output(path) as tmp:
        tmp.write_text(format_profile(values), encoding="utf-8")
    return path


def write_profile_on_rank_0(values: Dict[str, Sequence[float]], folder) -> None:
    """:func:`write_profile` into ``folder`` (a training run's ``--save-dir``) on
    data-parallel rank 0; nothing where ``folder`` is None (a model built in-process)."""
    from fairseq.distributed import utils as distributed_utils

    if not folder:
        return
    if distributed_utils.get_data_parallel_world_size() > 1 and distributed_utils.get_data_parallel_rank() != 0:
        return
    path = write_profile(values, folder)
    logger.info("Admin: profile written to %s (start other runs from it with --admin-profile %s)",
                path, path)


# -- reading ---------------------------------------------------------------------------


def _number(token: str, path, line_no: int, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise UserError(f"--admin-profile {path}, line {line_no}: {what} {token!r} is not a number") from None


def _stack_runs(indices: Sequence[int]) -> List[int]:
    """Lengths of the runs 1, 2, 3, ... that ``indices`` consist of (e.g. 24 then 36)."""
    runs: List[int] = []
    for index in indices:
        if index == 1 or not runs:
            runs.append(0)
        runs[-1] += 1
    return runs


def _layers(count: int, per_layer: int, stack: str) -> str:
    if per_layer and count % per_layer == 0:
        return f"{count // per_layer} {stack} layers"
    return f"{count} {stack} sublayers"


def read_profile(path, counts: Dict[str, int], layers: Dict[str, int]) -> Dict[str, List[float]]:
    """The omegas of each stack from the file ``path``, for a model with ``layers[stack]``
    layers and ``counts[stack]`` Admin sublayers. Refuses (:class:`UserError`, naming the
    file) a file that cannot be read, a line that is not two numbers, a count or an index
    that does not match the model's depth, and a value that is not finite and > 0."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise UserError(f"--admin-profile {path}: cannot read it ({reason})") from None
    rows = []  # (line number, index, value)
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise UserError(f"--admin-profile {path}, line {line_no}: expected 'INDEX VALUE', "
                            f"got {line.strip()!r}")
        index = _number(tokens[0], path, line_no, "index")
        value = _number(tokens[1], path, line_no, "value")
        if not index.is_integer():
            raise UserError(f"--admin-profile {path}, line {line_no}: index {tokens[0]} is not a whole number")
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"--admin-profile {path}, line {line_no}: omega {tokens[1]} is not a finite "
                            "number > 0")
        rows.append((line_no, int(index), value))
    enc, dec = counts["encoder"], counts["decoder"]
    per_layer = {stack: counts[stack] // max(1, layers[stack]) for stack in STACKS}
    expected = (f"this model ({layers['encoder']} encoder and {layers['decoder']} decoder layers) "
                f"needs {enc} + {dec} = {enc + dec} lines: encoder indices 1..{enc}, then decoder "
                f"indices 1..{dec}")
    if len(rows) != enc + dec:
        runs = _stack_runs([index for _, index, _ in rows])
        found = f"{len(rows)} lines"
        if len(runs) == 2:
            found += (f" (encoder 1..{runs[0]}, then decoder 1..{runs[1]}: a profile of "
                      f"{_layers(runs[0], per_layer['encoder'], 'encoder')} and "
                      f"{_layers(runs[1], per_layer['decoder'], 'decoder')})")
        raise UserError(f"--admin-profile {path} has {found}, but {expected}")
    wanted = [("encoder", i) for i in range(1, enc + 1)] + [("decoder", i) for i in range(1, dec + 1)]
    for (line_no, index, _), (stack, want) in zip(rows, wanted):
        if index != want:
            raise UserError(f"--admin-profile {path}, line {line_no}: index {index} where {stack} "
                            f"index {want} belongs; {expected}")
    values = [value for _, _, value in rows]
    return {"encoder": values[:enc], "decoder": values[enc:]}


@torch.no_grad()
def load_profile_(model, path) -> Dict[str, List[float]]:
    """Fill every Admin omega of ``model`` from the profile file ``path``; the values per stack."""
    norms = profile_norms(model)
    counts = {stack: len(norms[stack]) for stack in STACKS}
    layers = {stack: len(getattr(model, stack).layers) for stack in STACKS}
    values = read_profile(path, counts, layers)
    for stack in STACKS:
        for norm, value in zip(norms[stack], values[stack]):
            norm.omega.fill_(value)
    return values


def start_from_profile_(model, path) -> bool:
    """``--admin-profile``, at model build (before fairseq builds an optimizer): fill the
    omegas from ``path`` and mark the model profiled (``admin_profiled = 1``), so that it
    never profiles. A file that cannot be used is only an error where the initial omegas
    matter, when the model would train from them (:func:`refuse_unread_profile`):
    generation and resuming load omega from a checkpoint, wherever the file now is."""
    try:
        values = load_profile_(model, path)
    except UserError as err:
        model.__dict__["_admin_profile_error"] = err
        logger.warning("%s. Loading this model's weights from a checkpoint works; training it from "
                       "its initial weights is refused.", err)
        return False
    model.admin_profiled.fill_(1.0)
    for stack in STACKS:
        logger.info("Admin: omega of the %s sublayers read from %s: %s", stack, os.fspath(path),
                    " ".join(f"{v:.4f}" for v in values[stack]))
    return True


def refuse_unread_profile(model) -> None:
    """Raise the problem of an ``--admin-profile`` file that :func:`start_from_profile_`
    could not use, before a training forward would start from unset omegas."""
    error = model.__dict__.get("_admin_profile_error")
    if error is not None:
        raise UserError(f"{error}. Training starts Admin's omega from this file: give the "
                        "profile of a model of this depth, or leave --admin-profile out to profile "
                        "on the first batch")

"""Admin's profiling (:func:`profile_admin_`), and its profile as a file:
Transformer-Clinic's ``profile.ratio.init``.

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

The profile lives in each sublayer's buffer ``omega_init``; training moves the
parameter ``omega_delta`` (0 at build), and ``omega = omega_init +
omega_delta`` (:class:`~fairseq_rskip.modules.residual_norm.ResidualNorm`).
Profiling after fairseq built its optimizer therefore writes nothing an
optimizer holds a copy of. :func:`check_profile_kept` is the guard after the
first update.
"""

import logging
import math
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from fairseq_rskip.errors import UserError
from fairseq_rskip.modules.residual_norm import ResidualNorm
from fairseq_rskip.modules.skip_weights import STACKS

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.ratio.init"


def admin_residual_norms(stack_module) -> List[ResidualNorm]:
    """The ResidualNorms of a stack that carry an Admin ``omega``, input to output."""
    return [m for m in stack_module.modules() if isinstance(m, ResidualNorm) and m.omega_delta is not None]


def profile_norms(model) -> Dict[str, list]:
    """The Admin ``ResidualNorm``s of each stack of ``model``, in the order of the file."""
    return {stack: admin_residual_norms(getattr(model, stack)) for stack in STACKS}


def admin_omegas(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Admin's ``omega = omega_init + omega_delta`` of every sublayer of a model's state
    (``model.state_dict()``, a checkpoint's ``["model"]``), in float32, by the sublayer's
    name."""
    return {
        key[: -len(".omega_init")]: state[key].float() + state[key[: -len("_init")] + "_delta"].float()
        for key in state if key.endswith(".omega_init")
    }


def _variance(t: torch.Tensor) -> float:
    """Population variance over every element (Transformer-Clinic: ``np.var`` of
    the flattened batch tensor, padding positions included), in float32 at least."""
    return float(t.to(torch.promote_types(t.dtype, torch.float32)).var(unbiased=False))


@torch.no_grad()
def profile_admin_(model, run_forward: Callable[[], object]) -> Dict[str, List[float]]:
    """Set every Admin ``omega_init`` of ``model`` by the profiling recursion.

    ``run_forward()`` runs the model once (in training mode, on the first
    training batch). Per stack, a running value ``v`` starts at 1; at the
    sublayer ``i`` reached next, ``omega_i <- v`` (every entry), and
    ``v <- sqrt(Var[omega_i * x] + Var[F_i(x)])``, with ``x`` the sublayer's
    input and ``F_i(x)`` its output after dropout; the rest of the forward pass
    already uses the new ``omega_i``. So ``omega_i^2 ~ Var[x_0] + sum_{j<i}
    Var[F_j]`` (the paper's Section 5; Transformer-Clinic's
    ``--init-type adaptive-profiling``).

    With data parallelism only data-parallel rank 0 profiles, on its own batch,
    and broadcasts the values, so that every rank holds the same omega. The
    forward pass runs on a copy of the random state: the training batch that
    follows sees the same dropout masks as without profiling. The values go
    into the buffers ``omega_init`` (under ``--fp16`` rounded to float16, as
    the model's tensors are); ``omega_delta`` is not touched. Returns the
    values per stack in float32, before any rounding to half precision.
    """
    from fairseq.distributed import utils as distributed_utils

    stacks = profile_norms(model)
    norms = stacks["encoder"] + stacks["decoder"]
    if not norms:
        return {name: [] for name in STACKS}
    world_size = distributed_utils.get_data_parallel_world_size()
    device = norms[0].omega_init.device
    values = torch.zeros(len(norms), dtype=torch.float64, device=device)
    if world_size == 1 or distributed_utils.get_data_parallel_rank() == 0:
        values.copy_(torch.tensor(_run_profile(stacks, run_forward, device), dtype=torch.float64))
    if world_size > 1:
        group = distributed_utils.get_data_parallel_group()
        src = torch.distributed.get_global_rank(group, 0) if group is not None else 0
        distributed_utils.broadcast(values, src=src, group=group)
    for norm, value in zip(norms, values.tolist()):
        norm.omega_init.fill_(value)
    in_float32 = values.to(torch.float32).tolist()
    encoder = len(stacks["encoder"])
    profiled = {"encoder": in_float32[:encoder], "decoder": in_float32[encoder:]}
    _remember_start(model, stacks, profiled)
    where = f" (data-parallel rank 0's, sent to all {world_size} ranks)" if world_size > 1 else ""
    for name in STACKS:
        logger.info(
            "Admin: omega of the %s sublayers profiled on the first training batch%s: %s",
            name, where, " ".join(f"{v:.4f}" for v in profiled[name]),
        )
    return profiled


def _run_profile(stacks: Dict[str, List[ResidualNorm]], run_forward, device) -> List[float]:
    """One forward pass with a hook before every Admin sublayer; the omegas in
    stack order."""
    visited: Dict[int, int] = {}
    exact: Dict[int, float] = {}  # omega before rounding to the model's type
    handles = []

    def hook_for(running: Dict[str, float]):
        def before_skip(module, args):
            fx, residual = args[0], args[1]
            exact[id(module)] = running["v"]
            module.omega_init.fill_(running["v"])
            visited[id(module)] = visited.get(id(module), 0) + 1
            running["v"] = math.sqrt(_variance(residual * module.skip_vector()) + _variance(fx))

        return before_skip

    for norms in stacks.values():
        running = {"v": 1.0}  # each stack starts at 1
        handles += [norm.register_forward_pre_hook(hook_for(running)) for norm in norms]
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    norms = stacks["encoder"] + stacks["decoder"]
    missed = [i for i, norm in enumerate(norms) if visited.get(id(norm)) != 1]
    if missed:
        raise RuntimeError(
            "Admin profiling: the forward pass must go through every sublayer once; "
            f"{len(missed)} of {len(norms)} were not (or more than once)"
        )
    return [exact[id(norm)] for norm in norms]


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


def _profile_text(path) -> str:
    """The text of the profile file; a UserError naming the file where it cannot be read
    as UTF-8 text (a leading byte order mark is dropped)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"--admin-profile {path}: cannot read it ({err.strerror or err})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"--admin-profile {path}, line {line_no}: not text (byte 0x{data[err.start]:02x} "
                        "is not UTF-8); the file holds 'INDEX VALUE' lines") from None


def read_profile(path, counts: Dict[str, int], layers: Dict[str, int],
                 text: Optional[str] = None) -> Dict[str, List[float]]:
    """The omegas of each stack from the file ``path``, for a model with ``layers[stack]``
    layers and ``counts[stack]`` Admin sublayers. Refuses (:class:`UserError`, naming the
    file) a file that cannot be read, a line that is not two numbers, a count or an index
    that does not match the model's depth, and a value that is not finite and > 0. A
    leading UTF-8 byte order mark is skipped. ``text``: the file's text, already read."""
    if text is None:
        text = _profile_text(path)
    rows = []  # (line number, index, value)
    for line_no, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[0].startswith("#"):
            raise UserError(f"--admin-profile {path}, line {line_no}: a comment; the file holds "
                            "only 'INDEX VALUE' lines (Transformer-Clinic's profile.ratio.init)")
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


# The file's text, kept in the model's arguments once read, so that the arguments a
# checkpoint saves build the model without the file
PROFILE_TEXT_ATTR = "admin_profile_text"


@torch.no_grad()
def start_from_profile_(model, args) -> None:
    """``--admin-profile FILE``, when the model is built from ``args`` (before fairseq
    loads data or builds an optimizer): fill the ``omega_init`` from the file and mark
    the model profiled (``admin_profiled = 1``), so that it never profiles. A file that
    does not fit is a :class:`UserError`. The file's text is added to ``args``
    (:data:`PROFILE_TEXT_ATTR`): the arguments a checkpoint saves then build its model
    from that text, wherever the file is by then."""
    path = getattr(args, "admin_profile", None)
    if path is None:
        return
    text = getattr(args, PROFILE_TEXT_ATTR, None)
    source = f"{os.fspath(path)} (as the model's arguments keep it)" if text is not None else os.fspath(path)
    stacks = profile_norms(model)
    counts = {stack: len(stacks[stack]) for stack in STACKS}
    layers = {stack: len(getattr(model, stack).layers) for stack in STACKS}
    values = read_profile(path, counts, layers, text)
    for stack in STACKS:
        for norm, value in zip(stacks[stack], values[stack]):
            norm.omega_init.fill_(value)
    setattr(args, PROFILE_TEXT_ATTR, format_profile(values))
    model.admin_profiled.fill_(1.0)
    _remember_start(model, stacks, values)
    for stack in STACKS:
        logger.info("Admin: omega of the %s sublayers read from %s: %s", stack, source,
                    " ".join(f"{v:.4f}" for v in values[stack]))


# -- the guard after the first update ---------------------------------------------------

# Each omega after the first update is within this many of the optimizer's steps of lr
# per update from where it started (Adam moves an element by about lr per step), and
# within this share of its start (the start rounded to float16 or bfloat16).
STEPS_PER_UPDATE = 4
ROUNDING = 2.0 ** -7


def _remember_start(model, stacks: Dict[str, List[ResidualNorm]], values: Dict[str, Sequence[float]]) -> None:
    """Keep the start of every omega of ``stacks`` (not in the state: the guard runs
    once, in this process) for :func:`check_profile_kept`."""
    model.__dict__["_admin_start"] = [
        (norm, float(value)) for stack in STACKS for norm, value in zip(stacks[stack], values[stack])
    ]


@torch.no_grad()
def check_profile_kept(model, num_updates: int, lrs: Optional[Sequence[float]]) -> None:
    """After update ``num_updates`` (>= 1) of a model whose omegas this process set
    (profiled or read), every ``omega = omega_init + omega_delta`` must be within
    ``STEPS_PER_UPDATE * num_updates * lr`` of its start (``lr`` the largest of
    ``lrs``, fairseq's ``--lr``), plus its rounding: else
    something outside the model rewrote ``omega_init`` or ``omega_delta`` (an optimizer
    wrapper, a sharding or pipeline path) and training would go on from another
    omega. Raises a :class:`UserError` that says which sublayer and by how much;
    checks once; nothing to check, nothing done. Without ``lrs`` only ``omega_init`` is
    checked."""
    start = model.__dict__.pop("_admin_start", None)
    if not start:
        return
    lr = max(lrs) if lrs else None
    names = {norm: name for name, norm in model.named_modules()}
    for norm, value in start:
        init = norm.omega_init.detach().float()
        omega = init + norm.omega_delta.detach().float()
        rounding = ROUNDING * abs(value)
        moved = float((init - value).abs().max())
        if moved > rounding:
            raise UserError(
                f"Admin: after update {num_updates}, {names.get(norm, 'a sublayer')}.omega_init is "
                f"{float(init.max()):.6g} where the profile set {value:.6g}: something outside the "
                "model rewrote the buffer (an optimizer wrapper, a sharding or pipeline path); "
                "training would go on from another omega. Train without that wrapper, or report it")
        if lr is None:
            continue
        bound = STEPS_PER_UPDATE * num_updates * lr + rounding
        moved = float((omega - value).abs().max())
        if moved > bound:
            raise UserError(
                f"Admin: after update {num_updates}, omega of {names.get(norm, 'a sublayer')} moved "
                f"{moved:.4g} from its profile {value:.6g}, more than {STEPS_PER_UPDATE} optimizer "
                f"steps of lr {lr:g} per update ({bound:.4g}): something outside the model rewrote "
                "omega_delta (an optimizer wrapper, a sharding or pipeline path). Train without that "
                "wrapper, or report it")

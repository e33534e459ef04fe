"""Where a training update writes subnormal floats: counts per place.

:func:`count_subnormals` runs a step (forward, backward, optimiser) under a
``TorchDispatchMode`` that looks at every float32 tensor an operation writes
and counts its subnormal entries, ``0 < |x| < 2**-126``
(``torch.finfo(torch.float32).tiny``). A place is ``(phase, module, op)``:
the phase (``forward``, ``backward``, ``optimizer``), the innermost module
whose forward ran the operation (in backward: whose forward made the autograd
node that runs it) and the ATen operation. Views are not counted (they write
nothing), nor uninitialised allocations (``empty*``). Fused kernels are seen
from outside only: a subnormal that one of them makes and consumes inside
(e.g. the probabilities of ``scaled_dot_product_attention``) is not counted.
"""

from collections import Counter
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

TINY = torch.finfo(torch.float32).tiny
_TAG = "fairseq_rskip_module"
_UNINITIALISED = ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")

Place = Tuple[str, str, str]


def subnormal_count(t: torch.Tensor) -> int:
    """Entries of ``t`` with ``0 < |x| < TINY`` (float32 tensors; others 0)."""
    if t.dtype != torch.float32 or t.numel() == 0:
        return 0
    return int(((t != 0) & (t.abs() < TINY)).sum())


def _written(func, out) -> list:
    """The tensors ``func`` wrote: its outputs, less those that only alias an input."""
    returns = func._schema.returns
    outputs = tree_flatten(out)[0]
    written = []
    for i, t in enumerate(outputs):
        if not isinstance(t, torch.Tensor):
            continue
        alias = returns[i].alias_info if i < len(returns) else None
        if alias is None or alias.is_write:
            written.append(t)
    return written


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.sizes: Counter = Counter()
        self.phase = "forward"
        self.modules = []  # forward: the modules running, innermost last

    def _module(self) -> str:
        if self.phase == "forward":
            return self.modules[-1] if self.modules else "-"
        node = torch._C._current_autograd_node()
        return node.metadata.get(_TAG, "-") if node is not None else "-"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name.rstrip("_") in _UNINITIALISED:
            return out
        for t in _written(func, out):
            n = subnormal_count(t)
            if n:
                place = (self.phase, self._module(), name)
                self.counts[place] += n
                self.sizes[place] += t.numel()
        return out


def _tag_graph(outputs, start: int, name: str) -> None:
    """Name ``name`` on every autograd node reachable from ``outputs`` made since
    sequence number ``start`` and not named yet (inner modules name theirs first)."""
    stack = [t.grad_fn for t in tree_flatten(outputs)[0] if isinstance(t, torch.Tensor) and t.grad_fn]
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node._sequence_nr() < start:
            continue
        node.metadata.setdefault(_TAG, name)
        stack.extend(next_node for next_node, _ in node.next_functions)


def _sequence_now() -> int:
    with torch.enable_grad():
        return (torch.zeros((), requires_grad=True) * 1).grad_fn._sequence_nr()


@contextmanager
def _module_hooks(model: torch.nn.Module, counter: _Counter) -> Iterator[None]:
    handles = []
    starts: Dict[int, list] = {}
    for name, module in model.named_modules():
        name = name or "model"

        def pre(module, inputs, name=name):
            counter.modules.append(name)
            starts.setdefault(id(module), []).append(_sequence_now())

        def post(module, inputs, outputs, name=name):
            counter.modules.pop()
            start = starts[id(module)].pop()
            if torch.is_grad_enabled():
                _tag_graph(outputs, start, name)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_subnormals(
    model: torch.nn.Module,
    forward: Callable[[], torch.Tensor],
    optimizer: "torch.optim.Optimizer" = None,
) -> Tuple[Counter, Counter]:
    """``(counts, sizes)`` per place ``(phase, module, op)`` of one update:
    ``loss = forward()``, ``loss.backward()``, then ``optimizer.step()`` and
    ``zero_grad`` if given. ``sizes``: the entries of the tensors those counts
    are in."""
    counter = _Counter()
    with _module_hooks(model, counter), counter:
        loss = forward()
        counter.phase = "backward"
        loss.backward()
        if optimizer is not None:
            counter.phase = "optimizer"
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return counter.counts, counter.sizes


def remove_floors(model: torch.nn.Module) -> int:
    """Set every subnormal floor of ``model`` (:mod:`fairseq_rskip.modules.subnormals`)
    to 0, the models' computation without them; returns how many there were."""
    n = 0
    for module in model.modules():
        for attr in ("probability_floor", "gradient_floor"):
            if getattr(module, attr, 0.0) > 0.0:
                setattr(module, attr, 0.0)
                n += 1
    return n


def floor_effect(model: torch.nn.Module, forward: Callable[[torch.nn.Module], torch.Tensor],
                 seed: int = 0) -> Dict[str, float]:
    """What the floors change in one forward and backward pass: ``forward(m)``
    returns ``(output, loss)`` of model ``m``; it runs on ``model`` and on a copy
    without floors, each after ``torch.manual_seed(seed)`` (the same dropout).
    Returns the largest absolute difference of the outputs and of the parameter
    gradients, and the largest absolute output and gradient entry."""
    import copy

    unfloored = copy.deepcopy(model)
    remove_floors(unfloored)
    runs = []
    for m in (model, unfloored):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        output, loss = forward(m)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
        runs.append((output.detach(), grads))
    (out, grads), (out0, grads0) = runs
    return {
        "output_diff": (out - out0).abs().max().item(),
        "output_max": out0.abs().max().item(),
        "grad_diff": (grads - grads0).abs().max().item(),
        "grad_max": grads0.abs().max().item(),
    }

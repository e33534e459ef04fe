"""Values a model writes into its own parameters during training, carried into
the float32 master copies that fairseq's optimizer wrapper keeps.

fairseq's trainer builds its optimizer before the first forward pass. With
``--fp16`` or ``--bf16`` (not ``--memory-efficient-*``, not ``--amp``) that is an
``FP16Optimizer``: it holds a float32 copy of every trainable parameter, one
flat vector (the default) or one tensor per parameter
(``--fp16-no-flatten-grads``), steps the copy, and writes it back over the
model after every step (fairseq 0.12.3.1, ``fairseq/optim/fp16_optimizer.py``,
``build_fp32_params`` and ``_sync_fp32_params_to_fp16``). A value the model
writes into a parameter after the wrapper was built (Admin's profiled omega,
set on the first training batch) is therefore overwritten by the first step,
unless it reaches the copy first: :func:`carry_into_master_copies` does that,
from a pre-step hook on every ``torch.optim.Optimizer``, which fairseq's
optimizers (``adam``, ``fused_adam``, ...) all are.

The hook recognises the optimizer by its parameters, laid out as fairseq lays
them out: the model's trainable parameters first, in ``model.parameters()``
order (fairseq's trainer optimizes ``chain(model.parameters(),
criterion.parameters())``), either

- the model's own tensors (float32 training, ``--memory-efficient-fp16``,
  ``--amp``): nothing to carry;
- one float32 tensor per parameter, of the same shapes (``--fp16-no-flatten-grads``); or
- one flat float32 vector that starts with the parameters, in order (``--fp16``);

and, for the copies, only when every parameter that was not written holds its
copy's value (rounded to the parameter's type, as the wrapper writes it back).
Once it has carried a model's values, or seen the model's own tensors stepped,
or the model is gone, it forgets them; the one hook of the process stays, and
does nothing while no values wait.
"""

import logging
import weakref
from typing import Collection, Dict, List, Optional

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch import nn

logger = logging.getLogger(__name__)


def carry_into_master_copies(model: nn.Module, values: Dict[nn.Parameter, torch.Tensor]) -> None:
    """Write ``values`` (parameter of ``model`` -> its exact value) into the
    master copies of the next optimizer that steps ``model``'s parameters,
    before that step. A copy also gets the exact value where the model's own
    half-precision parameter holds it rounded."""
    global _HOOK
    _PENDING.append(_MasterCopyWriter(model, values))
    if _HOOK is None:  # one hook for the process, a no-op once nothing is pending
        _HOOK = register_optimizer_step_pre_hook(_before_any_step)


_PENDING: List["_MasterCopyWriter"] = []
_HOOK = None


def _before_any_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    # torch is iterating over its hooks: the hook stays, the writers that are done go
    _PENDING[:] = [writer for writer in _PENDING if not writer.settled_by(optimizer)]


class _MasterCopyWriter:
    def __init__(self, model: nn.Module, values: Dict[nn.Parameter, torch.Tensor]):
        self._model = weakref.ref(model)  # a discarded model is not kept alive
        self._values = {id(p): v.detach().to(torch.float32, copy=True) for p, v in values.items()}

    def settled_by(self, optimizer: torch.optim.Optimizer) -> bool:
        """Carry the values if ``optimizer`` holds the model's master copies;
        whether nothing is left to do (also: the model is gone, or the
        optimizer steps the model's own tensors, which hold the values)."""
        model = self._model()
        if model is None:
            return True
        params = [p for p in model.parameters() if p.requires_grad]
        stepped = [p for group in optimizer.param_groups for p in group["params"]]
        stepped_ids = {id(p) for p in stepped}
        if any(id(p) in stepped_ids for p in params):
            return True
        copies = _master_copies(params, stepped, written=self._values.keys())
        if copies is None:
            return False  # another optimizer of this process: wait for the model's own
        with torch.no_grad():
            for param, copy in zip(params, copies):
                value = self._values.get(id(param))
                if value is not None:
                    copy.copy_(value.to(copy.device).view_as(copy))
        logger.info("wrote %d value(s) set during training into the optimizer's float32 copies",
                    len(self._values))
        return True


def _master_copies(params: List[nn.Parameter], stepped: List[torch.Tensor], written: Collection[int]) -> Optional[List[torch.Tensor]]:
    """Views of ``stepped`` (an optimizer's parameters) that are the float32
    copies of ``params`` in fairseq's layout, or None where they are not: a
    layout that fits and every parameter but the ``written`` ones (ids) equal
    to its copy rounded to the parameter's type."""
    if not stepped or any(t.dtype != torch.float32 for t in stepped):
        return None
    if len(stepped) >= len(params) and all(c.shape == p.shape for c, p in zip(stepped, params)):
        copies = stepped[: len(params)]  # one tensor per parameter
    elif len(stepped) == 1 and stepped[0].dim() == 1 and stepped[0].numel() >= sum(p.numel() for p in params):
        flat, copies, offset = stepped[0], [], 0  # one flat vector
        for p in params:
            copies.append(flat.data[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
    else:
        return None
    held = all(
        torch.equal(c.data.to(p.dtype), p.data) for p, c in zip(params, copies) if id(p) not in written
    )
    return copies if held else None

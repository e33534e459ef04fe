"""Activation memory: what autograd keeps for the backward pass."""

from typing import Any, Callable, Iterable, Tuple

from torch import Tensor
from torch.autograd.graph import saved_tensors_hooks


def saved_activation_bytes(
    fn: Callable[[], Any], exclude: Iterable[Tensor] = ()
) -> Tuple[int, Any]:
    """``(bytes, fn())``: the size of the distinct storages autograd saves while ``fn`` runs.

    Storages of ``exclude`` (a model's parameters) are left out, and a storage
    saved by several operations (a tensor and its views) counts once. This is
    the activation memory of a training step, exactly and independent of the
    allocator; it is what differs between normalisation/skip variants.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out

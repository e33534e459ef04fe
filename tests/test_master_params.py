"""fairseq_rskip.optim.master_params: values written into a model after its
optimizer was built reach the float32 copies of fairseq's layouts (one per
parameter, or one flat vector), and nothing else. fairseq's own wrappers in
fairseq-train: tests/test_half_precision_training.py."""

import gc
import weakref

import torch
from torch import nn

from fairseq_rskip.optim.master_params import carry_into_master_copies


def half_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)).half()


def copies_per_parameter(model):
    """fairseq's FP16Optimizer with --fp16-no-flatten-grads: a float32 copy of each parameter."""
    return [nn.Parameter(p.detach().float()) for p in model.parameters()]


def flat_copy(model):
    """fairseq's FP16Optimizer with flattened gradients: one float32 vector."""
    return [nn.Parameter(torch.cat([p.detach().float().flatten() for p in model.parameters()]))]


def step(optimizer):
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()


def write_bias(model, value):
    """Set the last layer's bias after the optimizer was built (as Admin's
    profiling sets omega), to ``value`` exactly, and carry it."""
    bias = model[1].bias
    with torch.no_grad():
        bias.fill_(value)
    carry_into_master_copies(model, {bias: torch.full(bias.shape, value)})
    return bias


def test_copies_per_parameter_receive_the_exact_value():
    model = half_model()
    copies = copies_per_parameter(model)
    optimizer = torch.optim.SGD(copies, lr=0.1)
    write_bias(model, 1.0001)  # float16 holds 1.0
    step(optimizer)
    torch.testing.assert_close(copies[3], torch.full((2,), 1.0001), rtol=0, atol=0)
    for copy, p in zip(copies[:3], model.parameters()):
        assert torch.equal(copy, p.float())  # the others untouched


def test_a_flat_copy_receives_the_value_at_its_offset():
    model = half_model()
    (flat,) = flat_copy(model)
    before = flat.detach().clone()
    optimizer = torch.optim.SGD([flat], lr=0.1)
    write_bias(model, 1.5)
    step(optimizer)
    assert torch.equal(flat[-2:], torch.full((2,), 1.5))
    assert torch.equal(flat[:-2], before[:-2])


def test_another_models_optimizer_is_left_alone_and_the_hook_waits():
    model, other = half_model(0), half_model(1)
    other_copies, copies = copies_per_parameter(other), copies_per_parameter(model)
    other_optimizer, optimizer = torch.optim.SGD(other_copies, lr=0.1), torch.optim.SGD(copies, lr=0.1)
    write_bias(model, 2.0)
    step(other_optimizer)  # same shapes, other values: not the model's copies
    assert not torch.equal(other_copies[3], torch.full((2,), 2.0))
    step(optimizer)
    assert torch.equal(copies[3], torch.full((2,), 2.0))


def test_the_hook_is_gone_after_the_model_stepped_its_own_tensors():
    """float32 training, --memory-efficient-fp16, --amp: the optimizer steps the
    model's tensors, which hold the value; a later optimizer of copies made
    after that keeps its own values."""
    model = half_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    write_bias(model, 2.0)
    step(optimizer)
    copies = copies_per_parameter(model)
    with torch.no_grad():
        copies[3].fill_(3.0)
    step(torch.optim.SGD(copies, lr=0.1))
    assert torch.equal(copies[3], torch.full((2,), 3.0))


def test_a_discarded_model_is_not_kept_alive():
    model = half_model()
    write_bias(model, 2.0)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
    step(torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1))  # the hook, if any, lets go


def test_several_waiting_models_settle_in_one_step():
    """Models that profiled in-process and never trained (an analysis), one of
    them discarded, wait beside a model being trained: one step settles what
    it can, the others keep waiting, and nothing else is disturbed."""
    trained, waiting, discarded = half_model(0), half_model(1), half_model(2)
    for model in (waiting, discarded, trained):
        write_bias(model, 2.0)
    del discarded
    gc.collect()
    copies = copies_per_parameter(trained)
    step(torch.optim.SGD(copies, lr=0.1))
    assert torch.equal(copies[3], torch.full((2,), 2.0))
    waiting_copies = copies_per_parameter(waiting)
    step(torch.optim.SGD(waiting_copies, lr=0.1))
    assert torch.equal(waiting_copies[3], torch.full((2,), 2.0))

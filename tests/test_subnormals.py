"""No subnormal floats in the shortcut-free models' forward and backward passes
(fairseq_rskip.modules.subnormals), the floors' effect on the numbers, and the
counter that finds subnormals (fairseq_rskip.tools.benchmark.subnormals)."""

import copy
import math
from collections import Counter

import pytest
import torch

from conftest import build_model, make_dictionary, sample_batch
from fairseq.modules.multihead_attention import MultiheadAttention
from fairseq_rskip.tools.benchmark.subnormals import TINY, count_subnormals, floor_effect, remove_floors, subnormal_count
from fairseq_rskip.modules.shaped_attention import ShapedMultiheadAttention
from fairseq_rskip.modules.subnormals import FLOOR, floor_gradient, floored_softmax


def test_counter_names_phase_module_and_operation():
    """x = 1e-19: h = w0 x = 1e-39 is subnormal (forward, module 0); backward,
    dL/dw1 = h and dL/dw0 = w1 x are too; y = w1 h underflows to 0."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1e-20)
        model[1].weight.fill_(1e-20)
    x = torch.full((1, 1), 1e-19)
    counts, sizes = count_subnormals(model, lambda: model(x).sum())
    assert dict(counts) == {("forward", "0", "mm"): 1, ("backward", "1", "mm"): 1, ("backward", "0", "mm"): 1}
    assert subnormal_count(model[1].weight.grad) == 1 and subnormal_count(model[0].weight.grad) == 1
    assert subnormal_count(torch.tensor([TINY, TINY / 2, 0.0, -TINY / 4])) == 2


def test_floored_softmax_against_float64():
    """Zero exactly where exp(x - max x) <= FLOOR (so at most FLOOR), every kept
    probability above FLOOR / n; otherwise softmax to float32 rounding, and its
    gradient too."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 40, 300, generator=g) * 40).requires_grad_()
    p = floored_softmax(x)
    reference = torch.softmax(x.double(), -1)
    zero = p == 0
    relative = x.detach().double() - x.detach().double().amax(-1, keepdim=True)
    assert torch.equal(zero, relative <= math.log(FLOOR))
    assert zero.any() and (reference[zero] <= FLOOR).all()
    assert (p[~zero] > FLOOR / 300).all() and subnormal_count(p) == 0
    torch.testing.assert_close(p.double(), reference, rtol=1e-5, atol=FLOOR * 300)
    grad_out = torch.randn(p.shape, generator=g)
    (grad,) = torch.autograd.grad(p, x, grad_out)
    (expected,) = torch.autograd.grad(reference, x, grad_out.double())
    assert subnormal_count(grad) == 0 and (grad.abs()[grad != 0] > FLOOR).all()
    torch.testing.assert_close(grad.double(), expected.double(), rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # inference takes the same formula
        assert torch.equal(floored_softmax(x), p.detach())


def test_floor_gradient_is_the_identity_with_small_gradients_zero():
    x = torch.randn(5, 7, requires_grad=True)
    y = floor_gradient(x)
    assert torch.equal(y, x)
    grad_out = torch.tensor([1.0, FLOOR, FLOOR / 2, -FLOOR / 3, TINY / 2, -3.0, 1.0001 * FLOOR]).repeat(5, 1)
    y.backward(grad_out)
    expected = grad_out.clone()
    expected[:, 1:5] = 0.0
    assert torch.equal(x.grad, expected)


def attention_pass(attention, x, key=None):
    """Forward and backward of ``attention`` on ``x`` (and ``key`` for cross-attention)."""
    def forward():
        if key is None:
            out, _ = attention(x, x, x, need_weights=False)
        else:
            out, _ = attention(x, key, key, static_kv=True, need_weights=False)
        return (out * torch.linspace(-1, 1, out.size(-1))).sum()
    return count_subnormals(attention, forward)[0]


def test_spa_self_attention_writes_no_subnormal():
    """Causal E-SPA, layer 1 of 48, 128 tokens: A_1's entries fall to rho_1^127 =
    1e-66, so without the floor the softmax writes subnormal probabilities and
    gradients; with it, none."""
    torch.manual_seed(0)
    attention = ShapedMultiheadAttention(32, 4, 0.0, kernel="exponential", final=0.005, layer=1,
                                         num_layers=48, causal=True, value_skipinit=False).train()
    x = torch.randn(128, 2, 32, requires_grad=True)
    assert sum(attention_pass(attention, x).values()) == 0
    remove_floors(attention)
    unfloored = attention_pass(attention, x)
    assert unfloored[("forward", "model", "_softmax")] > 0
    assert unfloored[("backward", "model", "_softmax_backward_data")] > 0


def fairseq_cross_attention(ours):
    """fairseq's encoder-decoder attention with the weights of ``ours``."""
    reference = MultiheadAttention(ours.embed_dim, ours.num_heads, kdim=ours.kdim, vdim=ours.vdim,
                                   dropout=0.0, encoder_decoder_attention=True)
    reference.load_state_dict(ours.state_dict())
    return reference.train(ours.training)


@pytest.mark.parametrize("beam", [1, 3])
def test_cross_attention_is_fairseqs_step_by_step_and_in_beams(beam):
    """The shortcut-free models' cross-attention: fairseq's outputs, weights and
    gradients (no floor reached), full and step by step, its cache reordered by
    fairseq's reorder_incremental_state (with set_beam_size, once per sentence)."""
    torch.manual_seed(0)
    ours = ShapedMultiheadAttention(32, 4, 0.0, kernel="", final=0.0, layer=1, num_layers=2, causal=False,
                                    value_skipinit=False, encoder_decoder_attention=True, kdim=24)
    reference = fairseq_cross_attention(ours)
    sentences = 2
    encoder_out = torch.randn(5, sentences, 24).repeat_interleave(beam, dim=1).requires_grad_()
    padding = torch.tensor([[True, False, False, False, False], [False] * 5]).repeat_interleave(beam, dim=0)
    queries = torch.randn(4, sentences * beam, 32, requires_grad=True)
    results = []
    for attention in (ours, reference):
        out, weights = attention(queries, encoder_out, encoder_out, key_padding_mask=padding, static_kv=True,
                                 need_weights=True)
        grads = torch.autograd.grad(out.pow(2).sum(), [queries, encoder_out, *attention.parameters()])
        attention.set_beam_size(beam)
        state, steps = {}, []
        with torch.no_grad():
            for t in range(4):
                if t == 2:  # a reorder within each sentence's beam
                    order = torch.arange(sentences * beam).view(sentences, beam).flip(1).flatten()
                    attention.reorder_incremental_state(state, order)
                steps.append(attention(queries[t : t + 1], encoder_out, encoder_out, key_padding_mask=padding,
                                       incremental_state=state, static_kv=True)[0])
        results.append((out, weights, grads, torch.cat(steps)))
    (out, weights, grads, steps), (out0, weights0, grads0, steps0) = results
    torch.testing.assert_close(out, out0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, weights0, rtol=1e-5, atol=1e-7)
    for g, g0 in zip(grads, grads0):
        torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(steps, steps0, rtol=1e-5, atol=1e-6)


def test_saturated_cross_attention_writes_no_subnormal():
    """Large encoder outputs (what E-SPA's decoder meets after its first updates)
    saturate the softmax: subnormal probabilities and gradients without the
    floor, none with it."""
    torch.manual_seed(0)
    attention = ShapedMultiheadAttention(32, 4, 0.0, kernel="", final=0.0, layer=1, num_layers=2, causal=False,
                                         value_skipinit=False, encoder_decoder_attention=True).train()
    x = torch.randn(6, 2, 32, requires_grad=True)
    key = (40 * torch.randn(50, 2, 32)).requires_grad_()
    assert sum(attention_pass(attention, x, key).values()) == 0
    remove_floors(attention)
    assert attention_pass(attention, x, key)[("forward", "model", "_softmax")] > 0


def model_pass(model, batch):
    """Counts in the model's operations: the loss's log-softmax over the
    vocabulary (the criterion's, outside the model, module "-") is left out."""
    def forward():
        model.zero_grad(set_to_none=True)
        out = model(*batch)[0]
        return -torch.log_softmax(out, -1)[..., 5].sum()
    counts = count_subnormals(model, forward)[0]
    return Counter({place: n for place, n in counts.items() if place[1] != "-"})


def test_vanilla_model_writes_no_subnormal():
    """6 + 6 vanilla layers at init: the gradient vanishes with depth into
    subnormal floats in every backward operation, unless floored."""
    d = make_dictionary()
    batch = sample_batch(d, bsz=4, src_len=32, tgt_len=32)
    model = build_model("transformer_vanilla_tiny", "--encoder-layers", "6", "--decoder-layers", "6",
                        "--dropout", "0.1", dictionary=d).train()
    torch.manual_seed(0)
    assert sum(model_pass(model, batch).values()) == 0
    remove_floors(model)
    torch.manual_seed(0)
    unfloored = model_pass(model, batch)
    assert sum(n for (phase, _, _), n in unfloored.items() if phase == "backward") > 100


@pytest.mark.parametrize("arch", ["transformer_espa_tiny", "transformer_vanilla_tiny --value-skipinit"])
def test_shaped_models_write_no_subnormal_in_training(arch):
    """One update, then the next forward and backward: with dropout 0.3 the
    cross-attention saturates (subnormal probabilities and gradients without
    the floors); with them, no subnormal, and they change the output and the
    gradients by float32 rounding at most. (U-SPA runs E-SPA's code with other
    matrices.)"""
    d = make_dictionary()
    model = build_model(*arch.split(), "--encoder-layers", "6", "--decoder-layers", "6", "--dropout", "0.3",
                        dictionary=d).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    first, second = (sample_batch(d, bsz=4, src_len=32, tgt_len=32, seed=s) for s in (1, 2))
    torch.manual_seed(0)
    model(*first)[0].logsumexp(-1).sum().backward()
    optimizer.step()
    unfloored = copy.deepcopy(model)
    remove_floors(unfloored)
    for m in (model, unfloored):
        torch.manual_seed(0)
        counts = model_pass(m, second)
        if m is model:
            assert sum(counts.values()) == 0
        else:
            assert sum(n for (_, _, op), n in counts.items() if op == "_softmax") > 0

    def forward(m):
        out = m(*second)[0]
        return out, out.logsumexp(-1).sum()

    effect = floor_effect(model, forward)
    assert effect["output_diff"] <= 1e-6 * effect["output_max"]
    assert effect["grad_diff"] <= 1e-6 * effect["grad_max"]


def load_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks/count_subnormals.py"
    spec = importlib.util.spec_from_file_location("count_subnormals", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_count_script_reports_each_model(capsys):
    """benchmarks/count_subnormals.py end to end, tiny: vanilla 8 + 8 layers
    without floors writes subnormal gradients, with floors none in forward and
    backward; a wrong name is an error line."""
    script = load_script()
    args = ["--archs", "vanilla", "--size", "tiny", "--layers", "8", "--length", "32", "--sentences", "4",
            "--updates", "1", "--vocab", "200"]
    assert script.main(args + ["--no-floor"]) == 0
    unfloored = capsys.readouterr().out
    assert "floors removed" in unfloored and "backward" in unfloored.split("vanilla:")[1].splitlines()[0]
    assert script.main(args) == 0
    floored = capsys.readouterr().out.split("vanilla:")[1]
    assert "forward" not in floored.splitlines()[0] and "backward" not in floored.splitlines()[0]
    assert "the floors change the output by at most" in floored
    with pytest.raises(SystemExit) as exit_info:
        script.run_main(script.main, ["--archs", "nonsense"])
    assert exit_info.value.code == 2 and "error: --archs: unknown nonsense" in capsys.readouterr().err

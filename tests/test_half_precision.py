"""Half precision (float16, bfloat16) against float32.

Every variant's forward and backward with the model cast to half precision
(what fairseq's ``--fp16`` does to the model) and under CPU autocast; the
normalisations and the residual wiring directly, with the hand-written
gradients (recursive LayerNorm, recomputed norms, AdaNorm) against the
formulas; and fairseq's own ``--fp16`` / ``--bf16`` training paths as far as
they run without a GPU.

Errors are measured in units of the half type's machine epsilon
(``torch.finfo(dtype).eps``: 2**-10 for float16, 2**-7 for bfloat16) times the
size of the reference: ``max|half - reference| / (eps * max|reference|)``. One
rounding of the largest value is 0.5 units. Each bound below states the errors
it rests on, measured on the 2-core CPU development machine (torch 2.13.0):
for the instances tested, and the worst over other seeds of weights and data.
"""

import contextlib
import copy
import math
import re
import sys

import pytest
import torch

from conftest import TINY_BUILDS, build_model, decode_incrementally, json_logs, sample_batch, train
from fairseq_rskip.modules import NORM_TYPES, ResidualNorm, SkipNormConfig, adanorm, build_norm

HALF = [torch.float16, torch.bfloat16]


def error_units(actual, expected, dtype):
    """``max|actual - expected|`` in units of ``eps(dtype) * max|expected|``."""
    expected = expected.double()
    scale = torch.finfo(dtype).eps * expected.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return ((actual.double() - expected).abs().max() / scale).item()


def round_to(module, dtype):
    """Round ``module``'s parameters to ``dtype`` in place (kept in their own
    dtype), so that a half-precision copy holds exactly the same weights."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(dtype))
    return module


# ---------------------------------------------------------------------------
# Every variant: the model cast to half precision, under CPU autocast, and
# decoding step by step
# ---------------------------------------------------------------------------

# Measured over every variant (tests/conftest.py TINY_BUILDS, tiny size, one batch
# of 3 x 6 target tokens), the half-precision run against the float32 run with
# the same (rounded) weights; first for the instance tested here (seed 1,
# batch 0), then the worst over 8 seeds of weights and batch:
# - decoder output (logits): 1.4 units (2.5 over 8 seeds), both types, cast
#   and autocast; bound 4;
# - 1 - cosine similarity of all parameter gradients, flattened: 1.4e-4 and
#   4.6e-4 (3.2e-4 and 1.0e-3 over 8 seeds) for float16 and bfloat16; bounds
#   1e-3 and 3e-3;
# - relative error of each parameter gradient's norm: 0.011 and 0.022 (0.035
#   and 0.069 over 8 seeds); bounds 0.08 and 0.15.
# Gradients cannot be held closer, element-wise or per parameter: a ReLU input
# that rounds to the other side of 0 moves whole rows of a gradient (in float64,
# scaling the weights by 1 + 1e-3 * noise, about float16's rounding, moves a
# parameter gradient's norm by up to 4% and the gradient by up to 12%).
# The shaped models whose source path is live at start (--cross-attention-gain-init
# 0.3, with skipinit or value-skipinit) start with larger decoder states and logits,
# and bfloat16 moves their gradients more: 1 - cosine 4.2e-3 for the instance tested
# (value-skipinit; 3.2e-3 the worst over 8 other seeds and batches), a parameter
# gradient's norm by up to 0.18 (skipinit with g = 0.3, 8 seeds); bounds 5e-3 and 0.2.
OUTPUT_UNITS = 4
GRAD_COSINE_GAP = {torch.float16: 1e-3, torch.bfloat16: 5e-3}
GRAD_NORM_REL = {torch.float16: 0.08, torch.bfloat16: 0.2}
# A scalar gain's gradient (the cross-attention SkipInit gain g, Value-SkipInit's
# alpha and beta) is one sum over every element of the batch whose terms cancel
# (g = 0 at start): worst relative error over 8 seeds, cast and autocast, 0.39
# in float16 (U-SPA's g) and 0.21 in bfloat16 (Value-SkipInit's g); the other
# scalars stay below 0.025. The cosine check above holds them in the whole.
SCALAR_GRAD_REL = {torch.float16: 0.6, torch.bfloat16: 0.35}
# A gradient below this fraction of the whole gradient's norm is zero up to
# rounding: the vanilla model's decoder embeddings (1e-19 in float32), whose
# only path to the output is the cross-attention queries, which the collapsed
# encoder's identical keys ignore.
NUMERICALLY_ZERO = 1e-9
# NormFormer's per-head scales (c_attn, 1 at start) are such sums too, one per head,
# and their terms can cancel almost entirely: in decoder layer 0 of the instance
# tested the float32 gradient is 0.03, 4e-4 of the whole gradient's norm (81), and
# half precision moves it by up to 3.6 times itself (bfloat16 autocast; fairseq's own
# decoder layer computes it the same way, tests/test_baselines.py). Taking the
# product in float32 does not help: the error comes with the upstream gradient.
# Checked instead against the whole gradient's norm: measured 2.6e-5 (float16) and
# 1.3e-3 (bfloat16) of it.
CANCELLING_SUM_OF_WHOLE = {torch.float16: 1e-3, torch.bfloat16: 3e-3}


def _exactly_zero_gradient(name):
    """The key projection's bias adds ``q . b`` to every score of a query: the
    softmax ignores it, so its gradient is 0 up to rounding (about 1e-8 in
    float32, 1e-4 in half precision) and has no relative error to speak of."""
    return name.endswith("k_proj.bias")


def model_pass(model, batch, target, autocast=None):
    """Logits and parameter gradients of the loss fairseq's criteria compute:
    the summed NLL of ``target`` under ``get_normalized_probs`` (float32)."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=autocast) if autocast else contextlib.nullcontext():
        net_output = model(*batch)
    lprobs = model.get_normalized_probs(net_output, log_probs=True)
    lprobs.gather(-1, target.unsqueeze(-1)).sum().neg().backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return net_output[0].detach(), grads


def assert_close_to_float32(half_run, float_run, dtype):
    (out, grads), (out32, grads32) = half_run, float_run
    assert torch.isfinite(out).all()
    assert error_units(out, out32, dtype) <= OUTPUT_UNITS
    assert grads.keys() == grads32.keys()
    missing = [n for n, g in grads.items() if g is None]
    assert missing == []
    nonfinite = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert nonfinite == []
    flat = torch.cat([g.double().flatten() for g in grads.values()])
    flat32 = torch.cat([g.double().flatten() for g in grads32.values()])
    assert 1 - torch.nn.functional.cosine_similarity(flat, flat32, dim=0) <= GRAD_COSINE_GAP[dtype]
    for name, g32 in grads32.items():
        norm, norm32 = grads[name].double().norm(), g32.double().norm()
        if name.endswith(".c_attn"):
            assert abs(norm - norm32) <= CANCELLING_SUM_OF_WHOLE[dtype] * flat32.norm(), name
        elif not _exactly_zero_gradient(name) and norm32 > NUMERICALLY_ZERO * flat32.norm():
            bound = SCALAR_GRAD_REL[dtype] if g32.dim() == 0 else GRAD_NORM_REL[dtype]
            assert abs(norm - norm32) <= bound * norm32, name


def float32_model_and_batch(flags, dtype):
    model = round_to(build_model(*flags, "--dropout", "0").train(), dtype)
    batch = sample_batch()
    target = torch.randint(4, 24, batch[2].shape, generator=torch.Generator().manual_seed(5))
    return model, batch, target


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(TINY_BUILDS))
def test_model_in_half_precision_matches_float32(name, dtype):
    """``model.half()`` / ``model.to(torch.bfloat16)``, as fairseq's trainer casts
    the model with ``--fp16`` / ``--bf16``."""
    model, batch, target = float32_model_and_batch(TINY_BUILDS[name], dtype)
    half = copy.deepcopy(model).to(dtype)
    half_run = model_pass(half, batch, target)
    assert half_run[0].dtype == dtype
    assert all(g.dtype == dtype for g in half_run[1].values())
    assert_close_to_float32(half_run, model_pass(model, batch, target), dtype)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(TINY_BUILDS))
def test_model_under_cpu_autocast_matches_float32(name, dtype):
    """Mixed precision: float32 weights, matrix products in half precision; the
    recursive norms then recompute under the forward pass's autocast state."""
    model, batch, target = float32_model_and_batch(TINY_BUILDS[name], dtype)
    mixed_run = model_pass(model, batch, target, autocast=dtype)
    assert mixed_run[0].dtype == dtype  # the output projection ran in half precision
    assert all(g.dtype == torch.float32 for g in mixed_run[1].values())
    assert_close_to_float32(mixed_run, model_pass(model, batch, target), dtype)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", sorted(TINY_BUILDS))
def test_incremental_decoding_in_half_precision_matches_float32(name, dtype):
    """What ``fairseq-generate --fp16`` runs (it calls ``model.half()``):
    decoding step by step with cached keys and values. Measured: 1.7 units
    from the float32 full decoding (2.1 over 8 seeds); bound as above."""
    model = round_to(build_model(*TINY_BUILDS[name]).eval(), dtype)
    batch = sample_batch()
    with torch.no_grad():
        expected = model(*batch)[0]
        stepwise = decode_incrementally(copy.deepcopy(model).to(dtype), *batch)
    assert stepwise.dtype == dtype
    assert error_units(stepwise, expected, dtype) <= OUTPUT_UNITS


@pytest.mark.parametrize(
    "name,dtype", [("adanorm-prenorm", torch.float16), ("rskip3-shared", torch.bfloat16)], ids=str
)
def test_torchscript_in_half_precision_matches_float32(name, dtype):
    """TorchScript takes the formulas' own paths: AdaNorm under autograd, the
    recursive norms without recomputation (one type each: scripting takes
    seconds, and these paths do not depend on the type). Measured: at most 1.7
    units (every variant, both types); bound as above."""
    model = round_to(build_model(*TINY_BUILDS[name]).eval(), dtype)
    scripted = torch.jit.script(copy.deepcopy(model).to(dtype))
    batch = sample_batch()
    with torch.no_grad():
        out, expected = scripted(*batch)[0], model(*batch)[0]
    assert out.dtype == dtype
    assert error_units(out, expected, dtype) <= OUTPUT_UNITS


# ---------------------------------------------------------------------------
# The normalisations and the residual wiring, against their formulas
# ---------------------------------------------------------------------------

ROWS, DIM = (6, 4), 32  # T x B rows of DIM features

# Measured, half precision against the formulas in float64 on the same rounded
# inputs and weights (every case below, both types; the instances tested here,
# then the worst over 4 seeds): outputs 0.83 units (1.31), gradients 2.1 units
# (2.4); bounds 3 and 6. Under autocast, where only the sublayer output is
# half precision: outputs and the norms' parameter gradients 1.7 float32 units
# (bound 5), the gradients through the sublayer output 0.46 half units (one
# rounding; bound 1.5). A normalisation alone computes in float32 and rounds
# once: 0.45 units (bound 1); it would be 3.6 to 4.2 units on rows far from 0
# if AdaNorm computed in half precision.
NORM_OUTPUT_UNITS = 1
MODULE_OUTPUT_UNITS = 3
MODULE_GRAD_UNITS = 6
AUTOCAST_FLOAT32_UNITS = 5
AUTOCAST_SUBLAYER_GRAD_UNITS = 1.5


def formula(v, norm_type, weight=None, bias=None, scale=1.0, k=0.1, eps=1e-5, alpha=None):
    """One normalisation as fairseq_rskip.modules.normalization defines it."""
    if norm_type == "rmsnorm":  # eps inside the root, the default placement
        return v / (v.pow(2).mean(-1, keepdim=True) + eps).sqrt() * weight
    if norm_type == "dyt":
        return weight * torch.tanh(alpha * v) + bias
    centred = v - v.mean(-1, keepdim=True)
    if norm_type == "adanorm":
        y = centred / ((centred.pow(2).sum(-1, keepdim=True) / (v.size(-1) - 1)).sqrt() + eps)
        return scale * (1 - k * y).detach() * y
    if norm_type in ("layernorm", "simple"):
        y = centred / (centred.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        return y if weight is None else y * weight + bias
    return v


def randn(*shape, seed, dtype, mean=0.0, std=1.0):
    """Normal values rounded to ``dtype``, held in float32."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * std + mean).to(dtype).float()


def randomize(module, dtype, seed=11):
    """Gains around 1 and biases around 0, as after some training, rounded to ``dtype``."""
    with torch.no_grad():
        for i, (name, p) in enumerate(sorted(module.named_parameters())):
            mean = 1.0 if name.endswith("weight") else 0.0
            p.copy_(randn(*p.shape, seed=seed + i, dtype=dtype, mean=mean, std=0.5))
    return module


def _residual_cases():
    """ResidualNorm settings: (SkipNormConfig keywords, normalize_before)."""
    cases = {
        "xskip2-layernorm": (dict(skip_scale=2.0), False),
        "xskip0.5-none": (dict(norm_type="none", skip_scale=0.5), False),
    }
    for norm_type in ("layernorm", "simple", "adanorm", "rmsnorm", "dyt"):
        config = dict(norm_type=norm_type)
        if norm_type == "adanorm":
            config.update(adanorm_scale=2.0, adanorm_k=0.2)
        for n in (1, 2, 3):
            cases[f"{norm_type}-r{n}"] = (dict(config, skip_recursions=n), False)
        cases[f"{norm_type}-r3-shared"] = (dict(config, skip_recursions=3, skip_shared_norm=True), False)
        cases[f"{norm_type}-prenorm"] = (config, True)
    return cases


RESIDUAL_CASES = _residual_cases()


def sublayer_inputs(dtype, seed=20):
    """The residual ``x``, the gradient arriving at the output, and a stand-in
    sublayer ``F(h) = a * h + b`` (so that gradients reach pre-norm's ``N(x)``),
    all rounded to ``dtype``."""
    x = randn(*ROWS, DIM, seed=seed, dtype=dtype, mean=0.5, std=2.0)
    a, b = randn(*ROWS, DIM, seed=seed + 1, dtype=dtype), randn(*ROWS, DIM, seed=seed + 2, dtype=dtype)
    upstream = randn(*ROWS, DIM, seed=seed + 3, dtype=dtype)
    return x, a, b, upstream


def residual_norm_pass(module, x, a, b, upstream, sublayer_dtype=None):
    """Output and gradients (of ``x``, ``b`` and each parameter) of one sublayer
    wired through ``module``, as the layers use it; ``sublayer_dtype``: the
    sublayer's output dtype where it differs (autocast)."""
    x, b = x.detach().requires_grad_(), b.detach().requires_grad_()
    branch = a * module.branch_input(x) + b
    y = module(branch if sublayer_dtype is None else branch.to(sublayer_dtype), x)
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(y, [x, b, *params.values()], upstream.to(y.dtype))
    return y, dict(zip(["x", "b", *params], grads))


def residual_norm_formula(case, params, x, a, b, upstream, sublayer_dtype=None):
    """:func:`residual_norm_pass` by the formulas of
    fairseq_rskip.modules.residual_norm, in float64."""
    config, normalize_before = case
    norm_type = config.get("norm_type", "layernorm")
    shared = config.get("skip_shared_norm", False)
    adanorm_args = dict(scale=config.get("adanorm_scale", 1.0), k=config.get("adanorm_k", 0.1))
    params = {n: p.detach().double().requires_grad_() for n, p in params.items()}
    x, b = x.double().requires_grad_(), b.double().requires_grad_()

    def norm(i, v):  # N_{i+1}; with a shared norm every N_i is N_1
        prefix = "" if i == 0 or shared else f"recursion_norms.{i - 1}."
        return formula(v, norm_type, params.get(prefix + "weight"), params.get(prefix + "bias"),
                       alpha=params.get(prefix + "alpha"), **adanorm_args)

    def sublayer(h):  # F(h) = a * h + b, rounded as the sublayer's output is
        f = a.double() * h + b
        return f if sublayer_dtype is None else f + (f.to(sublayer_dtype).double() - f).detach()

    if normalize_before:
        y = x + sublayer(norm(0, x))
    else:
        y = norm(0, config.get("skip_scale", 1.0) * x + sublayer(x))
        for i in range(1, config.get("skip_recursions", 1)):
            y = norm(i, x + y)
    grads = torch.autograd.grad(y, [x, b, *params.values()], upstream.double())
    return y, dict(zip(["x", "b", *params], grads))


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", sorted(RESIDUAL_CASES))
def test_residual_norm_in_half_precision_matches_the_formula(case, dtype):
    """Every skip/normalisation wiring, its hand-written gradients included,
    run in half precision and in float32 on the same (rounded) inputs."""
    config, normalize_before = RESIDUAL_CASES[case]
    module = randomize(ResidualNorm(DIM, SkipNormConfig(**config), normalize_before=normalize_before), dtype)
    inputs = sublayer_inputs(dtype)
    expected, expected_grads = residual_norm_formula(RESIDUAL_CASES[case], dict(module.named_parameters()), *inputs)

    y32, grads32 = residual_norm_pass(module, *inputs)
    torch.testing.assert_close(y32, expected.float(), rtol=1e-5, atol=1e-5)
    for name, g in grads32.items():
        torch.testing.assert_close(g, expected_grads[name].float(), rtol=1e-4, atol=1e-4, msg=name)

    half = copy.deepcopy(module).to(dtype)
    y, grads = residual_norm_pass(half, *(t.to(dtype) for t in inputs))
    assert y.dtype == dtype
    assert error_units(y, expected, dtype) <= MODULE_OUTPUT_UNITS
    for name, g in grads.items():
        assert g.dtype == dtype
        assert error_units(g, expected_grads[name], dtype) <= MODULE_GRAD_UNITS, name


AUTOCAST_CASES = ["layernorm-r1", "layernorm-r2", "layernorm-r3-shared", "simple-r3", "adanorm-r2", "layernorm-prenorm"]


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("case", AUTOCAST_CASES)
def test_residual_norm_under_autocast_matches_the_formula(case, dtype):
    """Under autocast a sublayer's output is half precision and the residual
    stream float32 (as in fairseq): the skip sum and the norms run in float32,
    and the recursive norms recompute in backward under the forward's autocast
    state. Only the sublayer output's rounding remains."""
    config, normalize_before = RESIDUAL_CASES[case]
    module = randomize(ResidualNorm(DIM, SkipNormConfig(**config), normalize_before=normalize_before), dtype)
    inputs = sublayer_inputs(dtype)
    expected, expected_grads = residual_norm_formula(
        RESIDUAL_CASES[case], dict(module.named_parameters()), *inputs, sublayer_dtype=dtype
    )
    with torch.autocast("cpu", dtype=dtype):
        y, grads = residual_norm_pass(module, *inputs, sublayer_dtype=dtype)
    assert y.dtype == torch.float32
    assert error_units(y, expected, torch.float32) <= AUTOCAST_FLOAT32_UNITS
    for name, g in grads.items():
        assert g.dtype == torch.float32
        if name in ("x", "b"):  # through the half-precision sublayer output
            assert error_units(g, expected_grads[name], dtype) <= AUTOCAST_SUBLAYER_GRAD_UNITS, name
        else:
            assert error_units(g, expected_grads[name], torch.float32) <= AUTOCAST_FLOAT32_UNITS, name


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_normalization_in_half_precision_matches_the_formula(norm_type, dtype):
    """Each normalisation alone, on fairseq's transposed (T x B x C) encoder view."""
    norm = randomize(build_norm(DIM, SkipNormConfig(norm_type=norm_type, adanorm_scale=1.5, adanorm_k=0.2)), dtype)
    x, _, _, upstream = sublayer_inputs(dtype, seed=30)
    x = x.transpose(0, 1)
    params = dict(norm.named_parameters())
    x64 = x.double().requires_grad_()
    params64 = {n: p.detach().double().requires_grad_() for n, p in params.items()}
    expected = formula(x64, norm_type, params64.get("weight"), params64.get("bias"), scale=1.5, k=0.2,
                       alpha=params64.get("alpha"))
    expected_grads = torch.autograd.grad(expected, [x64, *params64.values()], upstream.transpose(0, 1).double())

    half = copy.deepcopy(norm).to(dtype)
    xh = x.to(dtype).requires_grad_()
    y = half(xh)
    assert y.dtype == dtype
    assert error_units(y, expected, dtype) <= NORM_OUTPUT_UNITS
    grads = torch.autograd.grad(y, [xh, *half.parameters()], upstream.transpose(0, 1).to(dtype))
    for name, g, e in zip(["x", *params], grads, expected_grads):
        assert g.dtype == dtype
        assert error_units(g, e, dtype) <= MODULE_GRAD_UNITS, name


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_half_precision_reaches_the_hand_written_gradients(dtype):
    """The cases above run the custom autograd Functions, not autograd's own
    graph: rSkip's recursive LayerNorm (layernorm, simple), its recomputed
    norms (adanorm, and any type under autocast) and AdaNorm's gradient."""
    custom = torch.autograd.function.BackwardCFunction
    for case in [c for c in RESIDUAL_CASES if "-r2" in c or "-r3" in c] + ["adanorm-r1"]:
        config, normalize_before = RESIDUAL_CASES[case]
        module = ResidualNorm(DIM, SkipNormConfig(**config), normalize_before=normalize_before).to(dtype)
        x, a, b, _ = (t.to(dtype).requires_grad_() for t in sublayer_inputs(dtype))
        assert isinstance(module(a * x + b, x).grad_fn, custom), case
        with torch.autocast("cpu", dtype=dtype):
            y = module.float()(b, x.float())
        assert y.dtype == torch.float32 and isinstance(y.grad_fn, custom), case
    x = sublayer_inputs(dtype)[0].to(dtype).transpose(0, 1).requires_grad_()
    assert isinstance(adanorm(x, 2.0, 0.2, 1e-5).grad_fn, custom)


@pytest.mark.parametrize("norm_type", ["layernorm", "simple", "adanorm", "rmsnorm"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_normalization_of_rows_far_from_zero(norm_type, dtype):
    """Rows with a large common offset (a pre-norm residual stream grows with
    depth): the mean and standard deviation are computed in float32, so the
    output is as accurate as for centred rows; in half precision itself the
    offset's rounding would swamp the deviations. (The offset is 25 standard
    deviations: torch's own CPU LayerNorm backward in half precision, fairseq's
    LayerNorm on CPU, loses accuracy as the ratio grows: input gradients 1.7
    units here, 5 to 9 units at 75.)"""
    norm = randomize(build_norm(DIM, SkipNormConfig(norm_type=norm_type)), dtype)
    x = randn(*ROWS, DIM, seed=31, dtype=dtype, mean=100.0, std=4.0).to(dtype).requires_grad_()
    upstream = randn(*ROWS, DIM, seed=32, dtype=dtype)
    x64 = x.detach().double().requires_grad_()
    weight, bias = (None if p is None else p.detach().double()
                    for p in (getattr(norm, "weight", None), getattr(norm, "bias", None)))
    expected = formula(x64, norm_type, weight, bias)
    (expected_grad,) = torch.autograd.grad(expected, x64, upstream.double())
    half = copy.deepcopy(norm).to(dtype)
    y = half(x)
    (grad,) = torch.autograd.grad(y, x, upstream.to(dtype))
    assert error_units(y, expected, dtype) <= NORM_OUTPUT_UNITS
    assert error_units(grad, expected_grad, dtype) <= MODULE_GRAD_UNITS


# ---------------------------------------------------------------------------
# fairseq's own half-precision training, as far as it runs without a GPU
# ---------------------------------------------------------------------------
#
# fairseq 0.12.3.1 with --cpu:
# - --fp16 keeps a flat float32 master copy of the weights, built on
#   ``torch.cuda.current_device()`` (fairseq/optim/fp16_optimizer.py, line 38):
#   it needs CUDA. With --fp16-no-flatten-grads the same FP16Optimizer keeps
#   one float32 copy per parameter, and the rest of the path (model.half(),
#   the batch converted to float16, dynamic loss scaling) runs on CPU.
# - --memory-efficient-fp16 runs on CPU as it is.
# - --bf16 and --memory-efficient-bf16 set --tpu (fairseq/options.py, lines
#   200-201: ``if args.bf16: args.tpu = True``), and the trainer then asks
#   torch_xla for its device (fairseq/trainer.py, lines 63-64:
#   ``elif self.tpu: self.device = utils.get_tpu_device()``), on a GPU as on
#   a CPU. Here fairseq-train runs with that one flag reset after parsing
#   (TRAIN_WITHOUT_TPU), which runs the rest of fairseq's bfloat16 path:
#   model.to(torch.bfloat16), the batch converted, the optimizers without
#   loss scaling.
# - --amp uses ``torch.cuda.amp.autocast`` (fairseq/tasks/fairseq_task.py,
#   line 531) and a CUDA GradScaler that disables itself without CUDA: on CPU
#   it trains in float32, so it is not tested here (CPU autocast is, above).
# fairseq saves checkpoints in float32 whatever the training precision
# (trainer.save_checkpoint -> utils.move_to_cpu, fairseq/utils.py lines
# 118-124).

TRAIN_WITHOUT_TPU = """
import fairseq_cli.train as train  # first: it sets up fairseq's log format
parse = train.options.parse_args_and_arch

def parse_without_tpu(*args, **kwargs):
    parsed = parse(*args, **kwargs)
    assert parsed.bf16 and parsed.tpu  # fairseq/options.py 0.12.3.1, lines 200-201
    parsed.tpu = False
    return parsed

train.options.parse_args_and_arch = parse_without_tpu
train.cli_main()
"""

CLI_ARCH = "transformer_rskip_tiny"  # rSkip, through the recursive-LayerNorm gradient
UPDATES, RESUME_AFTER = 5, 3
# path: (dtype, flags, whether to stop after 3 updates and resume). Resuming
# loads the optimizer state, with the loss scale, through FP16Optimizer
# (--fp16) and MemoryEfficientFP16Optimizer (--memory-efficient-fp16); the
# bfloat16 paths use the same two classes.
TRAINING_PATHS = {
    "fp16": (torch.float16, ("--fp16", "--fp16-no-flatten-grads"), True),
    "memory-efficient-fp16": (torch.float16, ("--memory-efficient-fp16",), True),
    "bf16": (torch.bfloat16, ("--bf16",), False),
    "memory-efficient-bf16": (torch.bfloat16, ("--memory-efficient-bf16",), False),
}
# The training loss (label-smoothed, base 2, logged with 3 decimals) of each of
# the 5 updates against the float32 run with the same seed: measured at most
# 0.001 with float16 (both paths) and 0.014 with --bf16, 0.022 with
# --memory-efficient-bf16 (bfloat16 weights without a float32 copy round
# each update); bounds 0.01 and 0.06.
TRAINING_LOSS_TOLERANCE = {torch.float16: 0.01, torch.bfloat16: 0.06}


def train_in_precision(data_bin, save_dir, max_update, path=None):
    flags = ("--cpu",) if path is None else ("--cpu", *TRAINING_PATHS[path][1])
    program = (sys.executable, "-c", TRAIN_WITHOUT_TPU) if path and "bf16" in path else ("fairseq-train",)
    return train(data_bin, CLI_ARCH, save_dir, max_update, *flags, "--no-epoch-checkpoints", program=program)


def losses(proc):
    return {int(r["num_updates"]): float(r["loss"]) for r in json_logs(proc)}


@pytest.fixture(scope="module")
def float32_losses(data_bin, tmp_path_factory):
    return losses(train_in_precision(data_bin, tmp_path_factory.mktemp("float32"), UPDATES))


@pytest.fixture(scope="module", params=sorted(TRAINING_PATHS))
def trained_in_half(request, data_bin, tmp_path_factory):
    """(path, save dir, runs): 5 updates, in one run or in two (3, then resumed)."""
    path = request.param
    save_dir = tmp_path_factory.mktemp(path)
    stops = [RESUME_AFTER, UPDATES] if TRAINING_PATHS[path][2] else [UPDATES]
    return path, save_dir, [train_in_precision(data_bin, save_dir, n, path) for n in stops]


@pytest.mark.slow
def test_fairseq_half_precision_training_follows_float32(trained_in_half, float32_losses):
    path, save_dir, runs = trained_in_half
    dtype = TRAINING_PATHS[path][0]
    logged = {}
    for proc in runs:
        assert "done training" in proc.stdout + proc.stderr
        log = json_logs(proc)
        # dynamic loss scaling with float16 only (fairseq's default initial scale 128)
        assert {r.get("loss_scale") for r in log} == ({"128"} if dtype == torch.float16 else {None})
        logged.update(losses(proc))
    assert sorted(logged) == list(range(1, UPDATES + 1))
    for update, loss in logged.items():
        assert math.isfinite(loss)
        assert abs(loss - float32_losses[update]) <= TRAINING_LOSS_TOLERANCE[dtype], update


@pytest.mark.slow
def test_fairseq_half_precision_checkpoint(trained_in_half):
    path, save_dir, runs = trained_in_half
    dtype = TRAINING_PATHS[path][0]
    if len(runs) == 2:  # the second run loaded the first one's checkpoint
        resumed = runs[1].stdout + runs[1].stderr
        assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch 1 @ 3 updates\)", resumed)
    state = torch.load(save_dir / "checkpoint_last.pt")
    assert state["optimizer_history"][-1]["num_updates"] == UPDATES
    assert state["cfg"]["common"]["fp16" if dtype == torch.float16 else "bf16"]
    weights = state["model"]
    assert {t.dtype for t in weights.values()} == {torch.float32}  # fairseq saves float32
    assert all(torch.isfinite(t).all() for t in weights.values())
    # the loss scale is kept for the next run (float16 only)
    assert ("loss_scale" in state["last_optimizer_state"]) == (dtype == torch.float16)

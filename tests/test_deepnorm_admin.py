"""DeepNorm and Admin: their formulas, initialisations and profiling, against
values written out here from the papers and against fairseq's own layers."""

import json
import math
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fairseq.models.transformer import TransformerConfig
from fairseq.modules.transformer_layer import TransformerDecoderLayerBase, TransformerEncoderLayerBase

from conftest import REPO, build_model, sample_batch
from fairseq_rskip.modules import ResidualNorm
from fairseq_rskip.modules.skip_weights import (
    admin_logn_omega,
    deepnorm_alpha,
    deepnorm_beta,
    torchscale_beta,
)

WIDE = ("--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
        "--encoder-ffn-embed-dim", "256", "--decoder-ffn-embed-dim", "256")


def layers_flags(n, m):
    return ("--encoder-layers", str(n), "--decoder-layers", str(m))


# ----------------------------------------------------------------------------
# DeepNorm: alpha and beta


@pytest.mark.parametrize("n,m", [(1, 1), (6, 6), (12, 6), (3, 18), (18, 18), (100, 100), (1000, 1000)])
def test_deepnorm_constants_are_the_papers_encoder_decoder_formulas(n, m):
    # DeepNet (Wang et al. 2022), Table 1, encoder-decoder column
    assert deepnorm_alpha("encoder", n, m) == pytest.approx(0.81 * (n**4 * m) ** (1 / 16), rel=1e-12)
    assert deepnorm_beta("encoder", n, m) == pytest.approx(0.87 * (n**4 * m) ** (-1 / 16), rel=1e-12)
    assert deepnorm_alpha("decoder", n, m) == pytest.approx((3 * m) ** 0.25, rel=1e-12)
    assert deepnorm_beta("decoder", n, m) == pytest.approx((12 * m) ** -0.25, rel=1e-12)
    # torchscale divides by (N^4 M)^(1/16) / 1.15 and (12 M)^(1/4)
    assert torchscale_beta("encoder", n, m) == pytest.approx(1 / ((n**4 * m) ** 0.0625 / 1.15), rel=1e-12)
    assert torchscale_beta("decoder", n, m) == pytest.approx(1 / (12 * m) ** 0.25, rel=1e-12)


def test_deepnorm_known_values():
    """6+6 layers: (N^4 M)^(1/16) = 6^(5/16) = 1.75047, so alpha_enc = 0.81 * 1.75047,
    beta_enc = 0.87 / 1.75047; alpha_dec = 18^(1/4), beta_dec = 72^(-1/4)."""
    assert deepnorm_alpha("encoder", 6, 6) == pytest.approx(1.4179, abs=1e-4)
    assert deepnorm_beta("encoder", 6, 6) == pytest.approx(0.4970, abs=1e-4)
    assert deepnorm_alpha("decoder", 6, 6) == pytest.approx(2.0598, abs=1e-4)
    assert deepnorm_beta("decoder", 6, 6) == pytest.approx(0.3433, abs=1e-4)


@pytest.mark.parametrize("n,m", [(2, 2), (4, 1), (1, 5)])
def test_every_sublayer_of_a_stack_gets_its_alpha_also_with_overridden_depths(n, m):
    model = build_model("transformer_deepnorm_tiny", *layers_flags(n, m))
    enc = [mod.skip_weight for mod in model.encoder.modules() if isinstance(mod, ResidualNorm)]
    dec = [mod.skip_weight for mod in model.decoder.modules() if isinstance(mod, ResidualNorm)]
    assert len(enc) == 2 * n and len(dec) == 3 * m
    assert enc == [pytest.approx(0.81 * (n**4 * m) ** (1 / 16))] * (2 * n)
    assert dec == [pytest.approx((3 * m) ** 0.25)] * (3 * m)
    assert not [name for name, _ in model.named_parameters() if "omega" in name]


def test_deepnorm_sizes_take_the_depths_of_their_size():
    model = build_model("transformer_deepnorm_wmt_en_de_big")
    assert model.encoder.layers[0].final_layer_norm.skip_weight == pytest.approx(deepnorm_alpha("encoder", 6, 6))


# ----------------------------------------------------------------------------
# DeepNorm: initialisation


def _pooled_std(tensors):
    return float(torch.cat([t.detach().flatten() for t in tensors]).std())


def _xavier_std(linear, gain):
    fan_out, fan_in = linear.weight.shape
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def _projection_groups(layers):
    groups = {}
    for layer in layers:
        attns = {"self_attn": layer.self_attn}
        if getattr(layer, "encoder_attn", None) is not None:
            attns["encoder_attn"] = layer.encoder_attn
        for aname, attn in attns.items():
            for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
                groups.setdefault(f"{aname}.{p}", []).append(getattr(attn, p))
        groups.setdefault("fc1", []).append(layer.fc1)
        groups.setdefault("fc2", []).append(layer.fc2)
    return groups


@pytest.mark.parametrize("init", ["paper", "torchscale"])
def test_deepnorm_initialisation_has_the_stated_standard_deviations(init):
    n, m = 4, 3
    model = build_model("transformer_deepnorm_tiny", *WIDE, *layers_flags(n, m), "--deepnorm-init", init)
    for stack, layers in (("encoder", model.encoder.layers), ("decoder", model.decoder.layers)):
        beta = deepnorm_beta(stack, n, m) if init == "paper" else torchscale_beta(stack, n, m)
        groups = _projection_groups(layers)
        assert len(groups) == (6 if stack == "encoder" else 10)
        for name, linears in groups.items():
            scaled = not name.endswith(("q_proj", "k_proj"))
            fan_in = linears[0].weight.shape[1]
            if init == "paper":
                expected = _xavier_std(linears[0], beta if scaled else 1.0)
            else:  # PyTorch's default Linear init: U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
                expected = (beta if scaled else 1.0) / math.sqrt(3 * fan_in)
            std = _pooled_std([lin.weight for lin in linears])
            assert std == pytest.approx(expected, rel=0.05), (stack, name)
            biases = torch.cat([lin.bias.detach() for lin in linears])
            bound = 1 / math.sqrt(fan_in)
            if init == "torchscale" and scaled:
                assert biases.abs().max() <= beta * bound + 1e-7, (stack, name)
                assert float(biases.std()) == pytest.approx(beta * bound / math.sqrt(3), rel=0.25)
            elif name.endswith("out_proj") and init == "paper":
                assert torch.count_nonzero(biases) == 0, (stack, name)  # fairseq's: zero
            else:
                assert biases.abs().max() <= bound + 1e-7, (stack, name)  # fairseq's / PyTorch's


def test_deepnorm_leaves_everything_else_as_fairseq_initialises_it():
    ref = build_model("transformer_tiny", *WIDE)
    ours = build_model("transformer_deepnorm_tiny", *WIDE)
    reinitialised = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight",
                     "fc1.weight", "fc2.weight")
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert list(ref_state) == list(our_state)  # fairseq's parameter names, none added
    same = [k for k in ref_state if not k.endswith(reinitialised)]
    assert "encoder.embed_tokens.weight" in same and "decoder.layers.0.fc1.bias" in same
    # the projections are drawn after fairseq's layer is built, so the random
    # stream differs from there on; the shapes and the non-projection tensors
    # of the first layer (drawn before) agree
    for k in ("encoder.embed_tokens.weight", "encoder.layers.0.self_attn_layer_norm.weight"):
        assert torch.equal(ref_state[k], our_state[k]), k


# ----------------------------------------------------------------------------
# the forward pass against fairseq's layers


class WeightedSkip:
    """fairseq's layer with ``residual_connection`` = ``w * residual + x``; ``w`` cycles
    through one weight per sublayer, in the order fairseq calls it."""

    weights: list = []
    calls = 0

    def residual_connection(self, x, residual):
        w = self.weights[self.calls % len(self.weights)]
        self.calls += 1
        return w * residual + x


class WeightedSkipEncoderLayer(WeightedSkip, TransformerEncoderLayerBase):
    pass


class WeightedSkipDecoderLayer(WeightedSkip, TransformerDecoderLayerBase):
    pass


def fairseq_reference(ours, arch_flags):
    """fairseq's ``transformer_tiny`` whose layers compute ``LN(w * x + F(x))`` with
    our model's weights ``w`` (alpha or omega) and parameters."""
    ref = build_model("transformer_tiny", *arch_flags)
    cfg = TransformerConfig.from_namespace(ref.args)
    for stack, cls in (("encoder", WeightedSkipEncoderLayer), ("decoder", WeightedSkipDecoderLayer)):
        ref_layers = getattr(ref, stack).layers
        for i, our_layer in enumerate(getattr(ours, stack).layers):
            layer = cls(cfg)
            names = ["self_attn_layer_norm", "final_layer_norm"]
            if stack == "decoder":
                names.insert(1, "encoder_attn_layer_norm")
            norms = [getattr(our_layer, name) for name in names]
            layer.weights = [n.skip_vector().detach() if n.omega_delta is not None else n.skip_weight for n in norms]
            ref_layers[i] = layer
    state = {k: v for k, v in ours.state_dict().items() if ".omega_" not in k and "admin_profiled" not in k}
    ref.load_state_dict(state, strict=True)
    return ref


@pytest.mark.parametrize("arch,extra", [
    ("transformer_deepnorm_tiny", ()),
    ("transformer_deepnorm_tiny", ("--deepnorm-init", "torchscale")),
    ("transformer_admin_tiny", ("--admin-init", "logn")),
    ("transformer_admin_tiny", ()),
])
def test_forward_is_layernorm_of_weighted_skip_built_from_fairseq_layers(arch, extra):
    flags = layers_flags(3, 2) + ("--dropout", "0.2", "--attention-dropout", "0.1")
    ours = build_model(arch, *flags, *extra)
    batch = sample_batch()
    if arch == "transformer_admin_tiny":
        with torch.no_grad():  # non-trivial, per-feature omega
            for norm in ours.modules():
                if isinstance(norm, ResidualNorm):
                    norm.omega_init.uniform_(0.5, 3.0)
                    norm.omega_delta.uniform_(-0.2, 0.2)
        if ours.admin_profiled is not None:
            ours.admin_profiled.fill_(1)
    ref = fairseq_reference(ours, flags)
    for train in (False, True):
        ours.train(train)
        ref.train(train)
        torch.manual_seed(7)
        expected = ref(*batch)[0]
        torch.manual_seed(7)
        got = ours(*batch)[0]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    expected.float().sum().backward()
    got.float().sum().backward()
    torch.testing.assert_close(
        ours.decoder.layers[0].fc1.weight.grad, ref.decoder.layers[0].fc1.weight.grad, rtol=1e-4, atol=1e-5
    )


# ----------------------------------------------------------------------------
# Admin: the closed form and the profiling recursion


@pytest.mark.parametrize("n", [1, 2, 6, 12, 36, 200])
def test_admin_logn_is_admin_torchs_formula(n):
    # admin_torch 0.1.0, calculate_init(num_res_layers, 'O(logn)'):
    # omega = ((n + 1) / log(n + 1) - 1) ** 0.5
    assert admin_logn_omega(n) == pytest.approx(((n + 1) / math.log(n + 1) - 1) ** 0.5, rel=1e-12)


def test_admin_logn_known_value():
    assert admin_logn_omega(12) == pytest.approx(2.0170, abs=1e-4)  # (13 / ln 13 - 1) ** 0.5


@pytest.mark.parametrize("n,m,extra", [(3, 2, ()), (2, 4, ()), (2, 3, ("--no-cross-attention",))])
def test_admin_logn_counts_the_residual_sublayers_of_each_stack(n, m, extra):
    """admin-torch counts residual sublayers: 2 per encoder layer, 3 per decoder
    layer (2 without cross-attention)."""
    model = build_model("transformer_admin_tiny", "--admin-init", "logn", *layers_flags(n, m), *extra)
    assert model.admin_profiled is None  # nothing to profile
    per_decoder_layer = 2 if extra else 3
    for stack, count in (("encoder", 2 * n), ("decoder", per_decoder_layer * m)):
        norms = [mod for mod in getattr(model, stack).modules() if isinstance(mod, ResidualNorm)]
        assert len(norms) == count
        for norm in norms:
            omega = norm.skip_vector()
            assert torch.allclose(omega, torch.full_like(omega, admin_logn_omega(count)))
            assert norm.omega_delta.requires_grad and omega.shape == (64,)


def np_var(t):
    """Transformer-Clinic's estimator: np.var of the flattened float tensor."""
    return float(np.var(t.detach().float().contiguous().view(-1).numpy()))


def hand_profile(model, src, lengths, prev):
    """Admin's recursion written out over the model's own submodules (dropout 0):
    per stack v = 1; at sublayer i: omega_i = v, v = sqrt(Var[omega_i x] + Var[F_i(x)])."""
    enc, dec = model.encoder, model.decoder
    omegas = {"encoder": [], "decoder": []}
    with torch.no_grad():
        pad = src.eq(enc.padding_idx)
        x, _ = enc.forward_embedding(src)
        x = (x * (1 - pad.unsqueeze(-1).type_as(x))).transpose(0, 1)
        v = 1.0

        def skip(stack, ln, residual, fx, v):
            omegas[stack].append(v)
            new_v = math.sqrt(np_var(v * residual) + np_var(fx))
            return F.layer_norm(v * residual + fx, (fx.size(-1),), ln.weight, ln.bias, ln.eps), new_v

        for layer in enc.layers:
            fx = layer.self_attn(query=x, key=x, value=x, key_padding_mask=pad)[0]
            x, v = skip("encoder", layer.self_attn_layer_norm, x, fx, v)
            fx = layer.fc2(F.relu(layer.fc1(x)))
            x, v = skip("encoder", layer.final_layer_norm, x, fx, v)
        encoder_out, v = x, 1.0
        y = dec.embed_scale * dec.embed_tokens(prev) + dec.embed_positions(prev)
        y = y.transpose(0, 1)
        causal = torch.triu(torch.full((prev.size(1), prev.size(1)), float("-inf")), 1)
        for layer in dec.layers:
            fx = layer.self_attn(query=y, key=y, value=y, attn_mask=causal)[0]
            y, v = skip("decoder", layer.self_attn_layer_norm, y, fx, v)
            fx = layer.encoder_attn(query=y, key=encoder_out, value=encoder_out,
                                    key_padding_mask=pad, static_kv=True)[0]
            y, v = skip("decoder", layer.encoder_attn_layer_norm, y, fx, v)
            fx = layer.fc2(F.relu(layer.fc1(y)))
            y, v = skip("decoder", layer.final_layer_norm, y, fx, v)
    return omegas


def test_admin_profiling_gives_the_hand_computed_recursion_once():
    model = build_model("transformer_admin_tiny", *layers_flags(3, 2), "--dropout", "0")
    batch = sample_batch(bsz=4, src_len=9, tgt_len=7)
    expected = hand_profile(model, *batch)
    assert float(model.admin_profiled) == 0
    model.eval()
    model(*batch)  # evaluation never profiles
    assert float(model.admin_profiled) == 0
    model.train()
    model(*batch)[0].sum().backward()  # the first training forward profiles, then trains
    assert float(model.admin_profiled) == 1
    for stack in ("encoder", "decoder"):
        norms = [mod for mod in getattr(model, stack).modules() if isinstance(mod, ResidualNorm)]
        omegas = [norm.omega_init for norm in norms]
        got = [float(o[0]) for o in omegas]
        assert got == pytest.approx(expected[stack], rel=1e-5), stack
        assert all(torch.equal(o, o[0].expand_as(o)) for o in omegas)  # every entry the same
        assert got[0] == 1.0 and all(a < b for a, b in zip(got, got[1:]))  # grows with depth
        assert all(norm.omega_delta.grad is not None for norm in norms)
        assert all(float(norm.omega_delta.detach().abs().max()) == 0 for norm in norms)  # training moves it
    before = {k: v.clone() for k, v in model.state_dict().items() if "omega" in k}
    model(*sample_batch(seed=5))  # later batches do not profile again
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "omega" in k)


def test_admin_profiling_keeps_the_random_state():
    """The profiling pass runs on a copy of the random state: the training pass sees
    the dropout masks it would have seen, so the profile is that of its batch."""
    model = build_model("transformer_admin_tiny", "--dropout", "0.3")
    batch = sample_batch()
    model.train()
    torch.manual_seed(11)
    model(*batch)
    after = torch.rand(3)
    torch.manual_seed(11)
    with torch.no_grad():
        model(*batch)  # profiled now: an ordinary forward
    assert torch.equal(torch.rand(3), after)


DISTRIBUTED_WORKER = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[4])
from conftest import build_model, sample_batch
from fairseq_rskip.modules.admin_profile import admin_omegas
rank, world, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
model = build_model("transformer_admin_tiny", "--dropout", "0.1").train()
model(*sample_batch(seed=rank, bsz=3 + rank))  # each rank its own first batch
omegas = torch.stack(list(admin_omegas(model.state_dict()).values()))
gathered = [torch.zeros_like(omegas) for _ in range(world)]
torch.distributed.all_gather(gathered, omegas)
torch.distributed.barrier()  # both ranks leave the group together (gloo aborts otherwise)
torch.distributed.destroy_process_group()
if rank == 0:
    alone = build_model("transformer_admin_tiny", "--dropout", "0.1").train()
    alone(*sample_batch(seed=0, bsz=3))  # rank 0's batch, without data parallelism
    reference = torch.stack(list(admin_omegas(alone.state_dict()).values()))
    print(json.dumps({"same_on_all_ranks": all(torch.equal(g, gathered[0]) for g in gathered),
                      "equals_rank0_alone": torch.allclose(gathered[0], reference, rtol=1e-6),
                      "profiled": float(model.admin_profiled), "n": omegas.shape[0],
                      "max": float(omegas.max())}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes
def test_admin_profile_is_rank_0s_on_every_data_parallel_rank():
    port = str(free_port())
    procs = [
        subprocess.Popen([sys.executable, "-c", DISTRIBUTED_WORKER, str(r), "2", port, str(REPO / "tests")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for r in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    assert result == {**result, "same_on_all_ranks": True, "equals_rank0_alone": True, "profiled": 1.0, "n": 10}
    assert result["max"] > 1.2


def test_every_parameter_of_a_state_dict_is_loaded_with_the_profiled_flag():
    profiled = build_model("transformer_admin_tiny")
    profiled.train()
    profiled(*sample_batch())
    fresh = build_model("transformer_admin_tiny", seed=2)
    fresh.load_state_dict(profiled.state_dict(), strict=True)
    assert float(fresh.admin_profiled) == 1
    fresh.train()
    fresh(*sample_batch(seed=3))  # a resumed model does not profile again
    ours, theirs = fresh.state_dict(), profiled.state_dict()
    omegas = [k for k in theirs if ".omega_" in k]
    assert len(omegas) == 2 * 10  # omega_init and omega_delta of each of the 10 sublayers
    assert all(torch.equal(ours[k], theirs[k]) for k in omegas)

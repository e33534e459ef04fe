"""fairseq Transformer features kept by every variant: incremental decoding,
TorchScript, state dicts, shared embeddings, depth, no unused parameters."""

import io

import pytest
import torch

from conftest import TINY_BUILDS, build_model, decode_incrementally, make_dictionary, sample_batch


def test_incremental_decoding_equals_full_decoding(variant):
    name, flags = variant
    model = build_model(*flags).eval()
    batch = sample_batch()
    with torch.no_grad():
        full = model(*batch)[0]
        stepwise = decode_incrementally(model, *batch)
    torch.testing.assert_close(stepwise, full, rtol=1e-5, atol=1e-5)


def test_incremental_decoding_with_cross_self_attention():
    model = build_model("transformer_rskip_tiny", "--cross-self-attention").eval()
    batch = sample_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            decode_incrementally(model, *batch), model(*batch)[0], rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow  # every variant scripted
def test_torchscript(variant):
    name, flags = variant
    model = build_model(*flags).eval()
    scripted = torch.jit.script(model)
    batch = sample_batch()
    with torch.no_grad():
        torch.testing.assert_close(scripted(*batch)[0], model(*batch)[0], rtol=1e-5, atol=1e-5)
    # and the scripted model survives serialisation
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    reloaded = torch.jit.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(*batch)[0], model(*batch)[0], rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip(variant):
    name, flags = variant
    model = build_model(*flags, seed=1).eval()
    fresh = build_model(*flags, seed=2).eval()
    batch = sample_batch()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(*batch)[0], model(*batch)[0])


def test_every_parameter_gets_a_gradient(variant):
    """DDP without find_unused_parameters needs every parameter in the graph."""
    name, flags = variant
    model = build_model(*flags).train()
    model(*sample_batch())[0].sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.slow  # every variant, twice
def test_activation_checkpointing_gives_the_same_gradients(variant):
    """--checkpoint-activations reruns each layer in backward: the recomputed
    norms and the in-place skip must give the same gradients."""
    name, flags = variant
    grads = []
    for extra in ((), ("--checkpoint-activations",)):
        model = build_model(*flags, "--dropout", "0", *extra).train()
        assert hasattr(model.decoder.layers[0], "precheckpoint_forward") == bool(extra)
        model(*sample_batch())[0].pow(2).mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    plain, checkpointed = grads
    assert plain.keys() == checkpointed.keys()
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], msg=n)


def test_share_all_embeddings():
    model = build_model("transformer_rskip_tiny", "--share-all-embeddings")
    assert model.encoder.embed_tokens.weight is model.decoder.embed_tokens.weight
    assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    model(*sample_batch())[0].sum().backward()


@pytest.mark.parametrize("arch", ["transformer_rskip_tiny", "transformer_adanorm_tiny", "transformer_prenorm_nowarmup_tiny",
                                  "transformer_deepnorm_tiny", "transformer_admin_tiny",
                                  "transformer_espa_tiny"])
@pytest.mark.slow  # trains deep models
def test_deep_model_builds_and_trains(arch):
    d = make_dictionary()
    model = build_model(
        arch, "--encoder-layers", "18", "--decoder-layers", "18", "--dropout", "0.1", dictionary=d
    )
    assert len(model.encoder.layers) == 18 and len(model.decoder.layers) == 18
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    src, lengths, prev = sample_batch(d)
    target = torch.roll(prev, -1, dims=1)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        logits = model(src, lengths, prev)[0]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", ["rskip2", "adanorm-prenorm", "prenorm", "deepnorm", "admin", "espa", "value_skipinit"])
def test_bfloat16_forward_and_backward(name):
    """What --bf16 does to the model; fp16 kernels need a GPU and are not run here."""
    model = build_model(*TINY_BUILDS[name]).eval()
    batch = sample_batch()
    with torch.no_grad():
        reference = model(*batch)[0]
    half = model.bfloat16()
    out = half(*batch)[0]
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.1, atol=0.15)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad.float()).all() for p in half.parameters())


def test_fairseq_postln_checkpoint_upgrade_path():
    """fairseq's upgrade of old `layer_norms.N` names still applies to our layers."""
    model = build_model("transformer_rskip_tiny", "--skip-recursions", "1")
    state = model.state_dict()
    old = dict(state)
    for side, names in (("encoder", ("self_attn_layer_norm", "final_layer_norm")),
                        ("decoder", ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"))):
        for i, new in enumerate(names):
            for p in ("weight", "bias"):
                old[f"{side}.layers.0.layer_norms.{i}.{p}"] = old.pop(f"{side}.layers.0.{new}.{p}")
    model.upgrade_state_dict(old)
    assert set(old) == set(state)
    for key in state:
        assert torch.equal(old[key], state[key]), key


def test_decoder_layer_accepts_a_previous_attention_state():
    """prev_self_attn_state / prev_attn_state (fairseq's ONNX/ensemble path) restore the cache."""
    model = build_model("transformer_rskip_tiny").eval()
    layer = model.decoder.layers[0]
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(1, 2, 64, generator=g), torch.randn(1, 2, 64, generator=g)
    enc = torch.randn(5, 2, 64, generator=g)
    with torch.no_grad():
        state = {}
        layer(x1, enc, incremental_state=state)
        expected, _, _ = layer(x2, enc, incremental_state=state)
        first = {}
        layer(x1, enc, incremental_state=first)
        self_buf = layer.self_attn._get_input_buffer(first)
        cross_buf = layer.encoder_attn._get_input_buffer(first)
        prev_self = [self_buf["prev_key"].view(2, 2, 1, -1), self_buf["prev_value"].view(2, 2, 1, -1)]
        prev_cross = [cross_buf["prev_key"].view(2, 2, 5, -1), cross_buf["prev_value"].view(2, 2, 5, -1)]
        restored, _, _ = layer(
            x2, enc, incremental_state={}, prev_self_attn_state=prev_self, prev_attn_state=prev_cross
        )
    torch.testing.assert_close(restored, expected)

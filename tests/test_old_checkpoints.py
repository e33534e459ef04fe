"""Checkpoints written by earlier versions load as what they were trained as.

The fixtures (tests/fixtures/old_checkpoints, written by
tests/fixtures/make_old_checkpoints.py) are real ``fairseq-train`` checkpoints
of commits 8b0f41b and c795a2c, when ``transformer_adanorm`` was Post-LN with
AdaNorm on every norm and C = 1, and of 823130a, when Admin's omega was one
parameter, with the outputs those versions computed on a fixed batch. Loaded through fairseq's own ``load_model_ensemble`` (with
``weights_only`` loading, as torch >= 2.6 does), they must give the same
outputs and the same normalisations as then.
"""

from pathlib import Path

import pytest
import torch
from fairseq import checkpoint_utils

from fairseq_rskip.modules import Normalization, ResidualNorm

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old_checkpoints"

# name: (Pre-LN, sublayer norm type, stack norms {name: type}, C)
CASES = {
    "adanorm": (False, "adanorm", {}, 1.0),
    "adanorm_before_dataclass": (False, "adanorm", {}, 1.0),
    "adanorm_simple_embedding_norm": (
        False, "simple",
        {"encoder.layernorm_embedding": "simple", "decoder.layernorm_embedding": "simple"}, 1.0,
    ),
    "adanorm_prenorm_c2": (
        True, "adanorm", {"encoder.layer_norm": "adanorm", "decoder.layer_norm": "adanorm"}, 2.0,
    ),
}


def load(name):
    [model], cfg = checkpoint_utils.load_model_ensemble(
        [str(FIXTURES / f"{name}.pt")],
        arg_overrides={"data": str(FIXTURES), "source_lang": "de", "target_lang": "en"},
    )
    return model.eval(), cfg


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_checkpoint_loads_as_it_was_trained(name):
    pre, sublayer, stack, scale = CASES[name]
    model, cfg = load(name)
    assert not hasattr(cfg.model, "stack_norm_type") or cfg.model.stack_norm_type is None
    norms = {n: m for n, m in model.named_modules() if isinstance(m, Normalization)}
    stack_norms = {n: m.norm_type for n, m in norms.items() if not isinstance(m, ResidualNorm)}
    assert stack_norms == stack
    for n, m in norms.items():
        if isinstance(m, ResidualNorm):
            assert m.norm_type == sublayer and m.normalize_before == pre, n
        if m.norm_type == "adanorm":
            assert m.adanorm_scale == scale, n
    expected = torch.load(FIXTURES / f"{name}.expected.pt")
    with torch.no_grad():
        logits = model(
            expected["src_tokens"], expected["src_lengths"], expected["prev_output_tokens"]
        )[0]
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-6, atol=1e-6)


# Admin checkpoints of 823130a: omega one parameter ``...omega``; one run profiled its
# first batch, the other started from an --admin-profile file that is gone now.
ADMIN_CASES = {"admin_profiled": None, "admin_profile_file": [1.0, 1.25, 1.5, 1.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]}


@pytest.mark.parametrize("name", sorted(ADMIN_CASES))
def test_old_admin_checkpoint_loads_with_its_omega(name):
    raw = torch.load(FIXTURES / f"{name}.pt", weights_only=False)
    old = {k[: -len(".omega")]: v for k, v in raw["model"].items() if k.endswith(".omega")}
    assert len(old) == 2 * 2 + 2 * 3 and not any(k.endswith("omega_init") for k in raw["model"])
    assert not Path(raw["cfg"]["model"].admin_profile or FIXTURES / "none").exists()
    model, _ = load(name)  # builds without the file: the weights hold omega
    state = model.state_dict()
    for sublayer, omega in old.items():
        assert torch.equal(state[f"{sublayer}.omega_init"], omega), sublayer
        assert torch.equal(state[f"{sublayer}.omega_delta"], torch.zeros_like(omega)), sublayer
    assert float(model.admin_profiled) == 1
    if ADMIN_CASES[name] is not None:  # 3 updates of lr 1e-2 from the file's values
        starts = [float(omega[0]) for omega in old.values()]
        assert starts == pytest.approx(ADMIN_CASES[name], abs=3 * 1e-2 * 1.01)
    expected = torch.load(FIXTURES / f"{name}.expected.pt")
    with torch.no_grad():
        logits = model(expected["src_tokens"], expected["src_lengths"], expected["prev_output_tokens"])[0]
    torch.testing.assert_close(logits, expected["logits"], rtol=1e-6, atol=1e-6)

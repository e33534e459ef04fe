"""The gradient analysis shows the paper's trend: lam != 1 without LN spreads the
per-sublayer gradient norms over orders of magnitude, with LN it does not."""

import math

import pytest
import torch

from fairseq_rskip.tools.gradients import gradients as ga
from fairseq_rskip.tools.warmup.warmup import RUNS, demo_runs, lr_at, train_curve
from fairseq_rskip.variants import VARIANTS, Variant, distinct_plugin_builds


@pytest.fixture(scope="module")
def results():
    torch.set_num_threads(1)
    keys = [(n, s, 1) for n in ("none", "layernorm") for s in (0.25, 1.0, 4.0)] + [("layernorm", 1.0, 3)]
    settings = [ga.skip_setting(norm=n, scale=s, recursions=r, depth=6) for n, s, r in keys]
    measured = ga.analyse(settings, updates=[0], size=ga.ModelSize(32, 64, 4), n_sentences=16,
                          echo=lambda m: None)
    assert [r.setting for r in measured] == settings
    return dict(zip(keys, measured))


def test_every_sublayer_is_measured(results):
    r = results[("layernorm", 1.0, 1)]
    names = list(r.grads)
    assert len(names) == 6 * 2 + 6 * 3
    assert names[0] == "encoder.0.self_attn" and names[-1] == "decoder.5.ffn"
    assert "decoder.3.cross_attn" in names
    assert all(v["output"] > 0 and v["weight"] > 0 for v in r.grads.values())


@pytest.mark.parametrize("scale", [0.25, 4.0])
def test_spread_without_ln_exceeds_spread_with_ln(results, scale):
    no_ln, ln = results[("none", scale, 1)], results[("layernorm", scale, 1)]
    for stack in ("encoder", "decoder"):
        # orders of magnitude (log10) more spread without LN
        assert no_ln.spread[stack] > ln.spread[stack] + 1.0, (stack, no_ln.spread, ln.spread)
        assert no_ln.spread[stack] > results[("none", 1.0, 1)].spread[stack] + 1.0
    # the log line names a sublayer that left the band without LN
    assert no_ln.out_of_band["encoder"] is not None
    assert "first out of band" in ga.band_message(no_ln, 10.0)


def test_ln_keeps_norms_in_band(results):
    for key in (("layernorm", 1.0, 1), ("layernorm", 4.0, 1), ("layernorm", 1.0, 3)):
        r = results[key]
        assert r.spread["encoder"] < 1.0 and r.spread["decoder"] < 1.5, (key, r.spread)
        assert r.out_of_band["encoder"] is None


def test_vanishing_direction(results):
    """lam < 1 without LN: the norm shrinks from the top of the encoder to its bottom."""
    g = results[("none", 0.25, 1)].grads
    assert g["encoder.0.self_attn"]["output"] < g["encoder.5.ffn"]["output"] / 100


def test_outputs_written(results, tmp_path):
    paths = ga.write_outputs(tmp_path, "scale", list(results.values()))
    assert len(paths) == 1 and paths[0].stat().st_size > 5000
    assert (tmp_path / "scale.csv").read_text().count("\n") == len(results) + 1
    assert "xSkip lam=0.25 (no norm),transformer_rskip,--norm-type none" in (tmp_path / "scale.csv").read_text()
    assert ga.first_out_of_band({"encoder.0.x": {"output": 1.0}, "encoder.1.x": {"output": 100.0}},
                                "encoder") == ("encoder.0.x", 0.01)


def test_depth_sweep_reads_the_variants_table(monkeypatch):
    labels = [s.label for s in ga.depth_sweep([6])]
    assert labels[:3] == ["Skip (no norm)", "xSkip lam=2 (no norm)", "xSkip+LN lam=2"]
    assert labels[3:] == [v.label for v in distinct_plugin_builds()]
    assert labels[3:7] == ["Post-LN", "Pre-LN", "rSkip+LN n=2", "AdaNorm"]
    # the stock rows are measured as the plugin builds them (every sublayer a ResidualNorm)
    post_ln = ga.depth_sweep([6])[3]
    assert (post_ln.arch, post_ln.flags) == ("transformer_rskip", ("--skip-recursions", "1"))
    # a new row of the table is all it takes
    monkeypatch.setitem(VARIANTS, "simple", Variant("simple", "transformer_rskip{size}",
                                                    ("--norm-type", "simple"), label="LN-simple"))
    assert [s.label for s in ga.depth_sweep([6])][-1] == "LN-simple"
    assert "simple-nowarmup" in demo_runs()


def test_warmup_demo_runs():
    torch.set_num_threads(1)
    assert lr_at(0, 1e-3, 100, warmup=False) == 1e-3
    assert lr_at(0, 1e-3, 100, warmup=True) == pytest.approx(1e-5)
    r = train_curve(RUNS["preln-nowarmup"], depth=2, dim=32, lr=1e-3, timescale=10, updates=6,
                    eval_every=3)
    assert [u for u, _ in r["curve"]] == [0, 3, 6]
    assert not r["diverged"] and math.isfinite(r["final_valid_loss"])
    assert r["final_valid_loss"] < r["curve"][0][1]


def test_deepnorm_and_admin_are_in_the_analysis():
    """Both recipes are measured like every setting (Admin profiles on its first
    forward, which the measurement hooks skip) and keep the norms in band."""
    torch.set_num_threads(1)
    assert {s.label for s in ga.depth_sweep([4])} >= {"DeepNorm", "Admin"}
    settings = [ga.variant_setting(VARIANTS[name], 4) for name in ("deepnorm", "admin")]
    results = ga.analyse(settings, updates=[0, 2], size=ga.ModelSize(32, 64, 4), n_sentences=16,
                         echo=lambda m: None)
    assert [(r.setting.label, r.updates) for r in results] == [
        ("DeepNorm", 0), ("DeepNorm", 2), ("Admin", 0), ("Admin", 2)]
    for r in results:
        assert len(r.grads) == 4 * 2 + 4 * 3
        assert all(math.isfinite(v["output"]) and v["output"] > 0 for v in r.grads.values())
        assert r.spread["encoder"] < 1.0 and r.spread["decoder"] < 1.5, (r.setting.label, r.spread)


def test_deep_sweep_compares_postln_deepnorm_admin():
    settings = ga.deep_sweep([6, 12])
    assert [(s.label, s.depth) for s in settings] == [
        ("Post-LN", 6), ("DeepNorm", 6), ("Admin", 6), ("Post-LN", 12), ("DeepNorm", 12), ("Admin", 12)]

"""The table of compared variants (fairseq_rskip/variants.py): complete, consistent, and
all that the runner, benchmark and analyses read."""


import pytest
import torch

from conftest import TINY_BUILDS, build_model, sample_batch
from fairseq.models import ARCH_MODEL_REGISTRY
from fairseq_rskip.tools import runner
from fairseq_rskip.models import FAMILIES, SIZES
from fairseq_rskip.variants import VARIANTS, Variant, distinct_plugin_builds, plugin_rows, size_suffix


def test_every_registered_family_is_a_row():
    rows = {v.fairseq_arch("") for v in VARIANTS.values()}
    assert set(FAMILIES) <= rows, set(FAMILIES) - rows


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rows_resolve_to_registered_architectures(name):
    v = VARIANTS[name]
    for suffix in SIZES:
        assert v.fairseq_arch(suffix) in ARCH_MODEL_REGISTRY
        assert v.plugin_build(suffix)[0] in ARCH_MODEL_REGISTRY
    assert VARIANTS[v.reference].stock
    assert v.label


def test_size_suffix():
    assert [size_suffix(s) for s in ("", "base", None, "tiny", "_tiny")] == ["", "", "", "_tiny", "_tiny"]
    assert VARIANTS["rskip"].fairseq_arch("iwslt_de_en") == "transformer_rskip_iwslt_de_en"


@pytest.mark.parametrize("name", [n for n, v in VARIANTS.items() if v.stock])
def test_stock_rows_plugin_build_is_the_same_model(name):
    """What the analyses measure for fairseq's own transformer is that model, bit for bit."""
    v = VARIANTS[name]
    arch, flags = v.plugin_build("tiny")
    stock = build_model(v.fairseq_arch("tiny"), *v.flags, "--dropout", "0").eval()
    plugin = build_model(arch, *flags, "--dropout", "0").eval()
    assert list(stock.state_dict()) == list(plugin.state_dict())
    batch = sample_batch()
    with torch.no_grad():
        assert torch.equal(stock(*batch)[0], plugin(*batch)[0])


def test_tests_and_tools_read_the_table(monkeypatch):
    # the tests' model fixture has every distinct model of the table
    for v in distinct_plugin_builds("tiny"):
        arch, flags = v.plugin_build("tiny")
        assert TINY_BUILDS[v.name] == (arch, *flags)
    from fairseq_rskip.tools.benchmark import cli as bench_cli
    from fairseq_rskip.tools.benchmark import throughput as bench

    # every row of the plugin, in the table's order; fairseq's own rows are the baselines
    assert plugin_rows()[:3] == ["rskip", "adanorm", "prenorm_nowarmup"]
    assert set(plugin_rows()) == set(VARIANTS) - {"postln", "preln"}
    assert bench.measured_names(["prenorm_nowarmup"]) == ["postln", "preln", "prenorm_nowarmup"]
    # a new row is all it takes: the runner and the benchmark take it up
    new = Variant("simple", "transformer_rskip{size}", ("--norm-type", "simple"), label="LN-simple")
    monkeypatch.setitem(VARIANTS, "simple", new)
    assert runner.resolve_archs(runner.Config(size="tiny"), ["simple"]) == {"simple": new}
    assert runner.Config().archs[-1] == "simple" and "simple" in runner.Config().all_variants()
    assert "simple" in plugin_rows() and bench_cli.parse(["--quick"]).archs[-1] == "simple"

"""The signal-propagation analysis measures what it says, and shows rank collapse."""

import csv
import math

import pytest
import torch

from fairseq_rskip.tools.signal_propagation import signal_propagation as sp
from fairseq_rskip.tools.signal_propagation.cli import main
from fairseq_rskip.variants import VARIANTS, distinct_plugin_builds
from fairseq_rskip.tools.common.modelbuild import build_model, collate_pairs, synthetic_dictionary
from fairseq_rskip.tools.common.synthetic import make_synthetic_databin, synthetic_pairs


def test_mean_pairwise_cosine_of_real_tokens():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 2, 8, generator=g, dtype=torch.float64)
    real = torch.tensor([[False, False, True, True, True], [True] * 5])
    expected = []
    for b in range(2):
        tokens = [h[t, b] for t in range(5) if real[b, t]]
        pairs = [torch.nn.functional.cosine_similarity(x, y, dim=0).item()
                 for i, x in enumerate(tokens) for j, y in enumerate(tokens) if i != j]
        expected.append(sum(pairs) / len(pairs))
    got = sp.mean_off_diagonal(sp.correlation_matrices(h, real))
    assert got == pytest.approx(sum(expected) / 2, abs=1e-12)


@pytest.fixture(scope="module")
def sample():
    d = synthetic_dictionary()
    return d, collate_pairs(synthetic_pairs(12, seed=3, min_len=6, max_len=12), d)


def records_of(name, extra, depth, sample):
    """The analysis of a row of the variants table, at tiny size, on the synthetic batch."""
    d, batch = sample
    variant = VARIANTS[name]
    arch, flags = variant.plugin_build("tiny")
    model, _ = build_model(arch, list(flags) + list(extra) + ["--encoder-layers", str(depth),
                                                              "--decoder-layers", str(depth)],
                           dictionary=d, seed=1)
    records = sp.analyse_model(variant, depth, model.eval(), [batch], d.pad())
    return {(r.stack, r.layer): r for r in records}


def test_vanilla_collapses_and_the_shaped_models_do_not(sample):
    vanilla = records_of("vanilla", (), 6, sample)
    espa = records_of("espa", ("--encoder-embed-dim", "256", "--decoder-embed-dim", "256"), 6, sample)
    for stack in ("encoder", "decoder"):
        assert vanilla[(stack, 0)].cosine < 0.6
        assert vanilla[(stack, 6)].cosine > 0.999  # rank collapse
        assert len([k for k in espa if k[0] == stack]) == 7
        # E-SPA follows the construction's prediction from the measured input kernel
        for layer in range(1, 7):
            r = espa[(stack, layer)]
            assert r.mean_field is not None and r.target is not None
            assert r.cosine == pytest.approx(r.mean_field, abs=0.03), (stack, layer)
        # and rises with depth instead of jumping to 1 at the first layer
        assert espa[(stack, 1)].cosine < 0.95 < vanilla[(stack, 1)].cosine


def test_value_skipinit_prediction_is_the_composed_c_map(sample):
    """A_l = I: the mean-field kernel is TAT's C map applied layer after layer."""
    d, batch = sample
    recs = records_of("value_skipinit", (), 3, sample)
    model, _ = build_model("transformer_vanilla_tiny", ["--value-skipinit", "--encoder-layers", "3",
                                                       "--decoder-layers", "3"], dictionary=d, seed=1)
    slope = model.encoder.layers[0].activation_fn.negative_slope
    h0 = sp.layer_representations(model.eval(), batch)["encoder"][0]
    k0s = sp.correlation_matrices(h0, batch["net_input"]["src_tokens"].ne(d.pad()))

    def cmap(c):
        return c + (1 - slope) ** 2 / (math.pi * (1 + slope ** 2)) * (math.sqrt(1 - c * c) - c * math.acos(c))

    predicted = []
    for k in k0s:
        n = k.size(0)
        values = [k[i, j].item() for i in range(n) for j in range(n) if i != j]
        for _ in range(3):
            values = [cmap(min(1.0, max(-1.0, c))) for c in values]
        predicted.append(sum(values) / len(values))
    assert recs[("encoder", 3)].mean_field == pytest.approx(sum(predicted) / len(predicted), abs=1e-9)
    assert recs[("encoder", 3)].target is None


def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    data = make_synthetic_databin(tmp_path / "bin", n_train=20, n_valid=20, n_test=4)
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), "--variants", "vanilla", "espa", "postln",
                 "--depths", "2", "3", "--size", "tiny", "--batches", "1", "--max-tokens", "200"]) == 0
    rows = list(csv.DictReader((out / "signal_propagation.csv").read_text(encoding="utf-8").splitlines()))
    assert {(r["variant"], r["label"], r["depth"]) for r in rows} == {
        (v, label, d) for v, label in (("vanilla", "vanilla"), ("espa", "E-SPA"), ("postln", "Post-LN"))
        for d in ("2", "3")}
    assert len(rows) == 2 * (3 + 4) * 3  # two stacks, layers 0..L, three variants
    assert (out / "signal_propagation.png").stat().st_size > 10_000
    table = (out / "signal_propagation.md").read_text()
    assert "| E-SPA |" in table and "enc L=3" in table
    assert "| E-SPA | encoder |" in capsys.readouterr().out


def test_command_refuses_a_missing_data_bin(tmp_path):
    from fairseq_rskip.errors import UserError

    with pytest.raises(UserError, match="--data .*nowhere: no such data-bin folder"):
        main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])


def test_default_variants_are_the_tables_distinct_models():
    assert sp.default_variants() == [v.name for v in distinct_plugin_builds()]
    assert {"vanilla", "espa", "uspa", "value_skipinit", "postln", "preln", "rskip", "adanorm"} <= set(
        sp.default_variants())

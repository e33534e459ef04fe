"""The output-change analysis measures what it says: the relative change of the decoder's output,
one Adam step, a perturbation of the residual branches only, the same starting point for each
batch, and a verdict that says whether Post-LN's change grows fastest with depth."""

import csv

import pytest
import torch

from fairseq_rskip.tools.output_change import output_change as oc
from fairseq_rskip.tools.common.modelbuild import build_model, collate_pairs, synthetic_dictionary
from fairseq_rskip.tools.common.synthetic import make_synthetic_databin, synthetic_pairs
from fairseq_rskip.tools.output_change.cli import main
from fairseq_rskip.errors import UserError
from fairseq_rskip.variants import VARIANTS


def test_relative_and_mean_square_change_over_the_real_positions():
    before = torch.tensor([[[3.0, 4.0], [9.0, 9.0]], [[0.0, 5.0], [1.0, 1.0]]])
    after = before.clone()
    after[0, 0] += torch.tensor([0.3, 0.4])  # a real position
    after[0, 1] += 100.0  # padding: not counted
    real = torch.tensor([[True, False], [True, True]])
    relative, mean_square = oc.change_between(before, after, real)
    assert relative == pytest.approx(0.5 / (25 + 25 + 2) ** 0.5, rel=1e-6)  # float32 inputs
    assert mean_square == pytest.approx(0.25 / 6, rel=1e-6)


@pytest.fixture(scope="module")
def batches():
    d = synthetic_dictionary()
    return d, [collate_pairs(synthetic_pairs(8, seed=s, min_len=4, max_len=9), d) for s in (1, 2)]


def small(name, depth, batches, *extra):
    d, _ = batches
    arch, flags = VARIANTS[name].plugin_build("tiny")
    return build_model(arch, [*flags, *oc.model_flags(depth, 32, 64, 4), *extra], dictionary=d, seed=1)[0]


def test_the_perturbation_moves_the_residual_branches_by_its_relative_size_and_nothing_else(batches):
    model = small("admin", 2, batches, "--encoder-embed-dim", "128", "--decoder-embed-dim", "128")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    branch = {id(p) for p in oc.branch_parameters(model)}
    assert len(branch) == 2 * (4 * 2 + 4) + 2 * (2 * 4 * 2 + 4)  # q,k,v,out (x2 cross) + fc1,fc2, w and b
    oc.perturb_(model, 0.01, torch.Generator().manual_seed(0))
    checked = 0
    for name, p in model.named_parameters():
        delta = (p.detach() - before[name]).float()
        if id(p) not in branch:
            assert torch.count_nonzero(delta) == 0, name  # embeddings, norms, omega
        elif before[name].abs().max() > 0 and p.numel() >= 16384:  # zero biases stay zero
            rms = before[name].float().pow(2).mean().sqrt()
            assert float(delta.pow(2).mean().sqrt() / rms) == pytest.approx(0.01, rel=0.05), name
            checked += 1
    assert checked == 2 * 4 + 2 * 8  # the 128 x 128 attention projections


def test_one_update_is_one_adam_step_of_about_lr_per_parameter(batches):
    model = small("postln", 2, batches)
    before = [p.detach().clone() for p in model.parameters()]
    oc.one_update_(model, batches[1][0], lr=1e-3)
    steps = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(model.parameters(), before)])
    assert float(steps.max()) <= 1e-3 + 1e-6  # float32 rounding of the parameters
    assert float(steps.median()) > 0.9e-3  # Adam's first step: lr * g / (|g| + eps)


def test_each_batch_starts_from_the_same_model_and_admin_is_profiled_first(batches):
    model = small("admin", 2, batches)
    records = oc.measure_model(VARIANTS["admin"], 2, model, batches[1], batches[0].pad(), lr=1e-4, eps=0.01)
    assert float(model.admin_profiled) == 1
    assert [(r.kind, r.batch) for r in records] == [
        ("update", 0), ("perturbation", 0), ("update", 1), ("perturbation", 1)]
    assert all(0 < r.change < 1 and r.mean_square > 0 for r in records)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    again = oc.measure_model(VARIANTS["admin"], 2, model, batches[1], batches[0].pad(), lr=1e-4, eps=0.01)
    assert [r.change for r in again] == [r.change for r in records]  # the model is given back as it came
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_small_changes_are_proportional_to_the_learning_rate_and_the_perturbation(batches):
    model = small("postln", 3, batches)
    d, samples = batches
    low = oc.measure_model(VARIANTS["postln"], 3, model, samples[:1], d.pad(), lr=1e-6, eps=1e-4)
    high = oc.measure_model(VARIANTS["postln"], 3, model, samples[:1], d.pad(), lr=1e-5, eps=1e-3)
    for a, b in zip(low, high):
        assert b.change / a.change == pytest.approx(10, rel=0.1), a.kind


def record(variant, depth, kind, change):
    return oc.Record(variant, VARIANTS[variant].label, depth, kind, 0, change, change ** 2, 1.0)


def records_of(table):
    return [record(v, d, "update", c) for v, changes in table.items() for d, c in zip((6, 18), changes)]


@pytest.mark.parametrize("table,expected", [
    ({"postln": (0.1, 0.4), "preln": (0.05, 0.08), "admin": (0.05, 0.07)},
     "update: as the paper reports, Post-LN's output change grows fastest from 6 to 18 layers; "
     "Post-LN's change is the largest at every depth (among Post-LN, Pre-LN, Admin; increase: Post-LN "
     "+0.3, Pre-LN +0.03, Admin +0.02; factor: Post-LN x4.00, Pre-LN x1.60, Admin x1.40)."),
    # the paper compares Post-LN with Pre-LN and Admin: other rows do not enter the verdict
    ({"postln": (0.1, 0.4), "preln": (0.05, 0.08), "rskip": (0.01, 0.2)},
     "update: as the paper reports, Post-LN's output change grows fastest from 6 to 18 layers; "
     "Post-LN's change is the largest at every depth (among Post-LN, Pre-LN; "),
    ({"postln": (0.1, 0.4), "rskip": (0.01, 0.2)},
     "update: only partly as the paper reports: from 6 to 18 layers Post-LN's output change has the "
     "largest increase, but rSkip+LN n=2's has the largest factor"),
    ({"postln": (0.1, 0.3), "preln": (0.02, 0.08)},
     "update: only partly as the paper reports: from 6 to 18 layers Post-LN's output change has the "
     "largest increase, but Pre-LN's has the largest factor; Post-LN's change is the largest"),
    ({"postln": (0.1, 0.12), "preln": (0.05, 0.2)},
     "update: NOT as the paper reports: from 6 to 18 layers Pre-LN's output change grows fastest "
     "(largest increase and factor), not Post-LN's; Post-LN's change is not the largest at every depth"),
])
def test_the_verdict_says_whether_post_ln_grows_fastest(table, expected):
    assert oc.verdict(records_of(table), "update").startswith(expected)
    assert oc.verdict(records_of({"preln": (0.1, 0.2), "admin": (0.1, 0.3)}), "update") is None


def test_command_writes_table_csv_and_plot(tmp_path, capsys):
    data = make_synthetic_databin(tmp_path / "bin", n_train=40, n_valid=8, n_test=4)
    out = tmp_path / "out"
    assert main(["--data", str(data), "--out", str(out), "--variants", "postln", "preln", "admin",
                 "--depths", "2", "1", "--batches", "2", "--max-tokens", "120", "--embed-dim", "16",
                 "--ffn-dim", "32", "--heads", "2"]) == 0
    rows = list(csv.DictReader((out / "output_change.csv").read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 3 * 2 * 2 * 2  # variants x depths x batches x kinds
    assert {(r["variant"], r["depth"], r["kind"]) for r in rows} == {
        (v, d, k) for v in ("postln", "preln", "admin") for d in ("1", "2") for k in oc.KINDS}
    table = (out / "output_change.md").read_text()
    assert "| Admin |" in table and "| variant | L=1 | L=2 | increase L=1 to 2 | factor L=1 to 2 |" in table
    assert "update: " in table and "perturbation: " in table  # the verdicts
    assert (out / "output_change.png").stat().st_size > 10_000
    assert "| Pre-LN |" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--data", "{tmp}/nowhere"], "--data .*nowhere: no such data-bin folder"),
    (["--data", "{tmp}", "--lr", "0"], "--lr must be a finite number > 0; got 0.0"),
    (["--data", "{tmp}", "--depths", "0"], "--depths must be positive"),
])
def test_command_refuses_bad_input(tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        main([a.format(tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "out")])

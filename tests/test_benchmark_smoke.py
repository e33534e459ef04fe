"""The benchmark (fairseq_rskip.tools.benchmark.throughput) --quick runs end to end (figures are not checked:
this is not a timed test)."""

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import run

pytestmark = pytest.mark.slow  # each test runs the benchmark's measurements in processes of their own

REPO = Path(__file__).resolve().parents[1]


def load_benchmark():
    from fairseq_rskip.tools.benchmark import throughput

    return throughput


def load_command():
    from fairseq_rskip.tools.benchmark import cli

    return cli


def test_quick_benchmark(tmp_path, capsys):
    bench_cli = load_command()
    out = tmp_path / "bench.json"
    assert bench_cli.main(["--quick", "--archs", "rskip", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["names"] == ["postln", "rskip"]
    for name in res["names"]:
        assert res["train_tok_s"][name] > 0 and res["gen_sent_s"][name] > 0
        assert math.isfinite(res["train_ratio"][name]) and math.isfinite(res["gen_ratio"][name])
        assert res["memory"][name]["peak_rss_mib"] > 100
    assert res["train_ratio"]["postln"] == 1.0
    # same size: the candidates differ from the baseline only by their norms' parameters
    assert abs(res["params"]["rskip"] - res["params"]["postln"]) < 0.02 * res["params"]["postln"]
    assert "rskip    train" in printed and "target >= 0.95" in printed
    assert "all targets met:" in printed


def test_sweep_reports_every_point_and_plots(tmp_path, capsys):
    """The cost sweep: each point is the paired comparison again, at that length/depth."""
    bench_cli = load_command()
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    argv = ["--quick", "--archs", "rskip", "--sweep", "length", "depth", "--sweep-lengths", "6", "12",
            "--sweep-depths", "1", "2", "--json-out", str(out), "--plot", str(plot)]
    assert bench_cli.main(argv) == 0
    rows = json.loads(out.read_text())["sweep"]
    assert [(r["axis"], r["value"], r["name"]) for r in rows] == [
        (axis, value, name) for axis, values in (("length", [6, 12]), ("depth", [1, 2]))
        for value in values for name in ("postln", "rskip")]
    for r in rows:
        assert r["train_s_per_tok"] > 0 and r["gen_s_per_tok"] > 0
        assert math.isfinite(r["train_ratio"]) and math.isfinite(r["gen_ratio"])
    by = {(r["axis"], r["value"], r["name"]): r for r in rows}
    # the depth axis changes the model: twice the layers, more parameters
    assert by[("depth", 2, "rskip")]["params"] > by[("depth", 1, "rskip")]["params"]
    assert plot.stat().st_size > 10000
    assert "cost sweep, cpu, precision fp32" in capsys.readouterr().out


def test_half_precision_mode_runs_on_cpu(tmp_path):
    """--precision bf16 (autocast, as the GPU mode runs fp16/bf16) as far as a CPU goes."""
    bench_cli = load_command()
    out = tmp_path / "bf16.json"
    assert bench_cli.main(["--quick", "--archs", "adanorm", "--precision", "bf16", "--mem-reps", "0",
                       "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["options"]["precision"] == "bf16"
    assert all(res["train_tok_s"][n] > 0 for n in res["names"])
    # autocast keeps less for backward than float32 (half-precision activations)
    fp32 = tmp_path / "fp32.json"
    assert bench_cli.main(["--quick", "--archs", "adanorm", "--mem-reps", "0", "--json-out", str(fp32)]) == 0
    assert res["saved_mib"]["postln"] < json.loads(fp32.read_text())["saved_mib"]["postln"]


def test_gpu_mode_without_a_gpu_is_an_error_line(capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the GPU mode runs instead")
    bench_cli = load_command()
    with pytest.raises(SystemExit) as exit_info:
        bench_cli.run_main(bench_cli.main, ["--quick", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "error: --device cuda: torch sees no GPU here" in capsys.readouterr().err


def test_flush_denormal_is_said_and_applied(tmp_path, capsys):
    """--flush-denormal: subnormal floats become zero in the measuring process, and the
    report says so (it is not what fairseq-train does)."""
    import torch

    bench_cli = load_command()
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert tiny.item() != 0.0
    try:
        assert bench_cli.main(["--quick", "--archs", "rskip", "--mem-reps", "0", "--flush-denormal"]) == 0
        assert (tiny * 1.0).item() == 0.0
    finally:
        torch.set_flush_denormal(False)
    assert "subnormals flushed to zero" in capsys.readouterr().out


def test_sweep_keeps_the_points_measured_before_one_fails(tmp_path, monkeypatch):
    """The JSON is written after every point: a point killed later (e.g. out of memory)
    does not take the earlier points' figures with it."""
    import pytest

    bench, bench_cli = load_benchmark(), load_command()
    opts = bench_cli.parse(["--archs", "rskip", "--sweep", "depth", "--sweep-depths", "1", "2",
                        "--json-out", str(tmp_path / "sweep.json")])
    figures = {"names": ["postln", "rskip"], "params": {"postln": 1, "rskip": 1},
               "train_tok_s": {"postln": 10.0, "rskip": 9.0}, "gen_sent_s": {"postln": 1.0, "rskip": 1.0},
               "train_ratio": {"postln": 1.0, "rskip": 0.9}, "gen_ratio": {"postln": 1.0, "rskip": 1.0}}
    calls = []

    def child(point, *flags, quiet=True):
        calls.append(point.layers)
        if len(calls) > 1:
            raise RuntimeError("--point-child failed (exit code -9)")
        return figures

    monkeypatch.setattr(bench, "in_child", child)
    with pytest.raises(RuntimeError):
        bench.run_sweep(opts)
    rows = json.loads((tmp_path / "sweep.json").read_text())["sweep"]
    assert [(r["value"], r["name"], r["train_ratio"]) for r in rows] == [(1, "postln", 1.0), (1, "rskip", 0.9)]
    assert calls == [1, 2]


def test_a_failing_child_is_named_with_its_error():
    """A measuring child process that fails raises with the child's own error text."""
    import pytest

    bench, bench_cli = load_benchmark(), load_command()
    opts = bench_cli.parse(["--quick"])
    with pytest.raises(RuntimeError, match=r"(?s)--memory-child no_such_variant failed \(exit code 1\).*no_such_variant"):
        bench.in_child(opts, "--memory-child", "no_such_variant")


def test_the_command_is_the_package_module():
    """rskip-benchmark is the console script of fairseq_rskip.tools.benchmark.cli."""
    proc = run([Path(sys.executable).parent / "rskip-benchmark", "--help"])
    assert "--sweep" in proc.stdout and "--device" in proc.stdout


def test_each_comparison_is_measured_in_a_process_of_its_own(tmp_path):
    """Several candidates: each one's models (with the baselines) live in a child process of
    their own, and each row still has its ratios to Post-LN and to Pre-LN."""
    import os

    bench_cli = load_command()
    out = tmp_path / "two.json"
    assert bench_cli.main(["--quick", "--archs", "rskip", "adanorm", "--reps", "1", "--steps", "1", "--mem-reps", "0",
                       "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["names"] == ["postln", "preln", "rskip", "adanorm"]
    assert [c["names"] for c in res["comparisons"]] == [["postln", "preln", "rskip"],
                                                        ["postln", "preln", "adanorm"]]
    pids = {c["pid"] for c in res["comparisons"]}
    assert len(pids) == 2
    assert os.getpid() not in pids
    for name in res["names"]:
        assert math.isfinite(res["train_ratio_preln"][name])
        assert math.isfinite(res["gen_ratio"][name])
    # the baselines were timed in both comparisons, each candidate in its own
    assert len(res["raw"]["train"]["postln"]) == 2 * len(res["raw"]["train"]["rskip"])


def test_pooled_figures_pair_each_candidate_within_its_comparison():
    """A ratio is the median over rounds of candidate / baseline within the same round of
    the same comparison; a baseline's figures pool every comparison that timed it."""
    bench = load_benchmark()

    def comparison(name, base, cand, pid):
        return {"names": ["postln", name], "pid": pid, "params": {"postln": 10, name: 11},
                "saved_mib": {"postln": 2.0, name: 3.0}, "gpu_mem": {"postln": [], name: []},
                "train": {"postln": base, name: cand}, "gen": {"postln": [1.0], name: [0.5]}}

    res = bench.pooled([comparison("rskip", [10.0, 20.0, 40.0], [5.0, 20.0, 80.0], 1),
                        comparison("deepnorm", [30.0], [15.0], 2)], ["postln", "rskip", "deepnorm"])
    assert res["train_ratio"] == {"postln": 1.0, "rskip": 1.0, "deepnorm": 0.5}
    assert res["train_tok_s"]["postln"] == 25.0  # median of 10, 20, 40, 30
    assert res["gen_ratio"]["rskip"] == 0.5
    assert res["saved_ratio"]["deepnorm"] == 1.5
    assert res["train_ratio_preln"] == {}

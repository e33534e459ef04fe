"""benchmarks/benchmark_throughput.py --quick runs end to end (figures are not checked:
this is not a timed test)."""

import importlib.util
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark_throughput",
                                                  REPO / "benchmarks/benchmark_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_benchmark(tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--archs", "rskip", "--json-out", str(out)]) == 0
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

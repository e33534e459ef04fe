"""The reproduction runner on a tiny synthetic data-bin: real fairseq-train runs."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_rskip.tools import runner as rp
from fairseq_rskip.tools.common.synthetic import make_synthetic_databin
from fairseq_rskip.tools.common.trainlog import parse_train_log, updates_to_target
from fairseq_rskip.errors import UserError

REPO = Path(__file__).resolve().parents[1]

FAKE_EVAL = """#!/usr/bin/env bash
# stands in for rskip-evaluate: checks the contract's options, writes the JSON record
set -euo pipefail
dir=""; subset=test
while [ $# -gt 0 ]; do
  case "$1" in
    --checkpoint-dir) dir="$2"; shift 2;;
    --subset) subset="$2"; shift 2;;
    --data|--beam|--lenpen|--user-dir|--avg-last|--translations-dir) shift 2;;
    *) echo "unexpected option $1" >&2; exit 3;;
  esac
done
test -f "$dir/checkpoint_best.pt"
printf '{"bleu_tokenized": 12.5, "sacrebleu": 11.0, "sacrebleu_signature": "fake", "checkpoint": "%s", "subset": "%s", "num_sentences": 40}\\n' "$dir/checkpoint_best.pt" "$subset" > "$dir/eval_$subset.json"
echo "BLEU 12.5"
"""


@pytest.fixture(scope="module")
def data_bin(tmp_path_factory):
    return make_synthetic_databin(tmp_path_factory.mktemp("synthetic"), n_train=200, n_valid=30, n_test=20)


@pytest.fixture(scope="module")
def fake_eval(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "evaluate.sh"
    path.write_text(FAKE_EVAL)
    return ["bash", str(path)]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def tiny_config(**kw) -> rp.Config:
    cfg = rp.Config(
        name="test", size="tiny", depths=[2], seeds=[1], lr=1e-3, warmup_updates=10,
        target_valid_loss=100.0, log_interval=2, threads=1,
        train_args=["--optimizer", "adam", "--criterion", "label_smoothed_cross_entropy",
                    "--label-smoothing", "0.1", "--max-tokens", "800", "--max-update", "12",
                    "--validate-interval-updates", "6", "--no-epoch-checkpoints",
                    "--num-workers", "0", "--cpu"],
        variants={"boom": {"arch": "transformer_rskip_tiny",
                           "args": ["--lr", "1e6", "--warmup-updates", "1"]}},
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def test_runner_tables_resume_and_divergence(data_bin, fake_eval, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    lines = []
    terminal = FakeTerminal()
    with monkeypatch.context() as m:
        m.setattr(sys, "stderr", terminal)
        rows = rp.reproduce(tiny_config(), out, data=data_bin, archs=["postln", "rskip", "boom"],
                            evaluate_command=fake_eval, echo=lines.append)
    # on a terminal, each run showed a live bar: updates of --max-update, the latest loss
    drawn = terminal.getvalue()
    for key in ("postln-d2-s1", "rskip-d2-s1"):
        assert f"{key}: 100%" in drawn and "12/12 [" in drawn
        assert f"{key} evaluating" in drawn
    assert "loss " in drawn
    by_arch = {r["arch"]: r for r in rows}
    assert set(by_arch) == {"postln", "rskip", "boom"}
    for arch in ("postln", "rskip"):
        row = by_arch[arch]
        assert row["status"] == "1 ok"
        assert 0 < float(row["best_valid_loss"]) < 20
        assert float(row["tokens_per_s"]) > 0
        assert float(row["bleu"]) == 12.5 and float(row["sacrebleu"]) == 11.0
        assert float(row["peak_rss_mib"]) > 50
        first_valid = json.loads((out / f"runs/{arch}-d2-s1/result.json").read_text())["valid_curve"][0][0]
        assert row["updates_to_target"] == f"{first_valid} (1/1)"  # every loss is under 100
    # the forced-NaN run is kept and marked, not dropped
    assert by_arch["boom"]["status"] == "1 diverged"
    assert by_arch["boom"]["bleu"] == "n/a"
    runs = list(csv.DictReader((out / "runs.csv").read_text(encoding="utf-8").splitlines()))
    assert {r["arch"]: r["status"] for r in runs} == {"postln": "ok", "rskip": "ok", "boom": "diverged"}
    md = (out / "results.md").read_text()
    assert "| boom | 2 | 1 | 1 diverged |" in md
    # fairseq crashed in update 3 (its crash.pt holds the 2 updates before); update 2 was logged
    boom = json.loads((out / "runs/boom-d2-s1/result.json").read_text())
    assert boom["diverged_at_update"] == 3
    assert "**diverged** at update 3 (the last logged before it: 2): FloatingPointError" in md
    assert "| boom | 2 | 1 | diverged at update 3 |" in md
    assert (out / "valid_loss_d2.png").stat().st_size > 1000
    record = json.loads((out / "runs/rskip-d2-s1/result.json").read_text())
    assert record["fairseq_arch"] == "transformer_rskip_tiny"
    assert {6, 12} <= {u for u, _ in record["valid_curve"]}

    # a second invocation trains nothing
    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")}
    lines.clear()
    rows2 = rp.reproduce(tiny_config(), out, data=data_bin, archs=["postln", "rskip", "boom"],
                         evaluate_command=fake_eval, echo=lines.append)
    assert sum("finished earlier" in l for l in lines) == 3
    assert not any("training" in l for l in lines)
    assert {p: p.stat().st_mtime for p in out.glob("runs/*/result.json")} == mtimes
    assert [r["status"] for r in rows2] == [r["status"] for r in rows]

    # an interrupted run (no result record yet) resumes from checkpoint_last.pt
    run_dir = out / "runs/postln-d2-s1"
    (run_dir / "result.json").unlink()
    (run_dir / "trained.json").unlink()
    lines.clear()
    capsys.readouterr()
    rp.reproduce(tiny_config(), out, data=data_bin, archs=["postln"], evaluate_command=fake_eval,
                 echo=lines.append)
    assert capsys.readouterr().err == ""  # no bar when stderr is not a terminal
    assert any("[postln-d2-s1] resuming" in l for l in lines)
    attempts = [json.loads(l) for l in (run_dir / "attempts.jsonl").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[1]["resumed"] is True
    assert "Loaded checkpoint" in (run_dir / "train.log").read_text()
    assert "@ 12 updates)" in (run_dir / "train.log").read_text()
    record = json.loads((run_dir / "result.json").read_text())
    assert record["num_updates"] >= 12  # fairseq checks --max-update after one more update
    # under other settings (--max-update 16) the folder is not resumed: refused
    cfg = tiny_config()
    cfg.train_args = [a if a != "12" else "16" for a in cfg.train_args]
    with pytest.raises(UserError, match=r"postln-d2-s1: --max-update: 12 there, 16 now"):
        rp.reproduce(cfg, out, data=data_bin, archs=["postln"], evaluate_command=fake_eval)


def test_no_bleu_and_dry_run(data_bin, tmp_path):
    lines = []
    rp.reproduce(tiny_config(), tmp_path / "dry", data=data_bin, archs=["preln", "prenorm_nowarmup"],
                 dry_run=True, echo=lines.append)
    assert len(lines) == 2
    assert "--encoder-normalize-before --decoder-normalize-before" in lines[0]
    assert "--lr-scheduler inverse_sqrt_nowarmup --decay-timescale 10" in lines[1]
    assert "--arch transformer_prenorm_nowarmup_tiny" in lines[1]
    assert not (tmp_path / "dry" / "runs").exists()


def test_unknown_architecture(data_bin, tmp_path):
    with pytest.raises(UserError, match="unknown architecture 'transformer_nope'"):
        rp.reproduce(tiny_config(), tmp_path, data=data_bin, archs=["postln", "transformer_nope"],
                     no_bleu=True)
    # a registered fairseq name is accepted as it is
    assert rp.resolve_archs(tiny_config(), ["transformer_rskip_tiny"])["transformer_rskip_tiny"] \
        .fairseq_arch("tiny") == "transformer_rskip_tiny"
    with pytest.raises(UserError, match="resolves to 'transformer_rskip_nosuchsize'"):
        rp.resolve_archs(tiny_config(size="nosuchsize"), ["rskip"])


def test_missing_data_bin_and_evaluator(data_bin, tmp_path):
    with pytest.raises(UserError, match="data-bin not found"):
        rp.reproduce(tiny_config(), tmp_path, data=tmp_path / "missing", no_bleu=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a fairseq translation data-bin"):
        rp.reproduce(tiny_config(), tmp_path, data=tmp_path / "empty", no_bleu=True)
    with pytest.raises(UserError, match="evaluation command not found"):
        rp.reproduce(tiny_config(), tmp_path, data=data_bin, archs=["postln"],
                     evaluate_command=[str(tmp_path / "nope.sh")])


def test_cli_errors_are_clear(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(Path(sys.executable).parent / "rskip-reproduce"), "--data", str(tmp_path / "nope"),
         "--out", str(tmp_path / "o"), "--no-bleu"],
        capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert any(line.startswith("error: data-bin not found") for line in proc.stderr.splitlines())
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"archs": ["postln"], "learning_rate": 1}')
    proc = subprocess.run(
        [sys.executable, str(Path(sys.executable).parent / "rskip-reproduce"), "--config", str(bad),
         "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "unknown keys ['learning_rate']" in proc.stderr


def test_parse_train_log_marks_nonfinite():
    log = "\n".join([
        '2026 | INFO | fairseq_cli.train | num. shared model params: 1,234 (num. trained: 1,234)',
        '2026 | INFO | train_inner | {"epoch": 1, "loss": "5.0", "wps": "100", "num_updates": "2"}',
        '2026 | INFO | train_inner | {"epoch": 1, "loss": "4.0", "wps": "300", "num_updates": "4"}',
        '2026 | INFO | train_inner | {"epoch": 1, "loss": "3.0", "wps": "500", "num_updates": "6"}',
        '2026 | INFO | valid | {"epoch": 1, "valid_loss": "4.5", "valid_num_updates": "4"}',
        '2026 | INFO | valid | {"epoch": 1, "valid_loss": "nan", "valid_num_updates": "6"}',
    ])
    parsed = parse_train_log(log)
    assert parsed["params"] == 1234
    assert parsed["tokens_per_s"] == 400  # median after the first interval
    assert parsed["best_valid_loss"] == 4.5
    assert parsed["nonfinite_loss"] is True
    assert parsed["num_updates"] == 6
    assert updates_to_target(parsed["valid_curve"], 5.0) == 4
    assert updates_to_target(parsed["valid_curve"], 1.0) is None


def test_shipped_configs_load():
    compared = {  # the demo: Post-LN against rSkip only; the deep one: all without warm-up
        "bundled-demo.json": {"postln", "rskip"},
        "bundled-deep.json": {"postln_nowarmup", "prenorm_nowarmup", "rskip_nowarmup",
                              "deepnorm_nowarmup", "admin_nowarmup", "vanilla_nowarmup",
                              "espa_nowarmup", "uspa_nowarmup"},
        # AdaNorm's readings (docs/adanorm.md)
        "bundled-adanorm.json": {"preln", "preln_simple", "preln_adanorm_final",
                                 "preln_adanorm_final_c1", "preln_adanorm_every", "postln",
                                 "postln_adanorm"},
        "bundled-shortcut-free.json": {"postln", "espa", "uspa", "value_skipinit", "vanilla"},
        # the cross-attention readings of the shortcut-free models
        "bundled-cross-attention.json": {"postln", "espa", "uspa", "espa_cross_g03", "uspa_cross_g03",
                                         "espa_cross_residual", "uspa_cross_residual"},
        "enfr-cross-attention.json": {"postln", "espa", "uspa", "espa_cross_g03", "uspa_cross_g03"},
        # the baselines of normalisation and residual studies (docs/baselines.md)
        "bundled-baselines.json": {"postln", "preln", "prenorm_nowarmup", "rmsnorm", "rmsnorm_nowarmup", "dyt",
                                   "dyt_nowarmup", "sandwich", "periln", "normformer", "rezero",
                                   "rezero_nowarmup", "skipinit", "skipinit_nowarmup", "tfixup"},
        "iwslt14-adanorm-gpu.json": {"postln", "preln_layernorm", "preln_simple_final",
                                     "adanorm_final", "adanorm_final_c2", "adanorm_every",
                                     "simple_every"},
    }
    for path in (REPO / "examples/translation/configs").glob("*.json"):
        cfg = rp.Config.load(path)
        variants = rp.resolve_archs(cfg, cfg.archs)
        # every comparison has fairseq's baseline: its Post-LN transformer
        assert any(v.arch == "transformer{size}" and not v.flags for v in variants.values()), path
        expected = compared.get(path.name, {"postln", "preln", "rskip", "adanorm", "prenorm_nowarmup"})
        assert set(variants) >= expected, path
        if path.name == "bundled-deep.json":
            assert all(v.nowarmup for v in variants.values()) and cfg.depths == [12]
        # each variant is compared with its reference row, which the comparison runs too (the
        # deep one has no Pre-LN with warm-up for the table's prenorm_nowarmup)
        unpaired = {name for name, v in variants.items() if v.reference not in variants}
        assert unpaired == ({"prenorm_nowarmup"} if path.name == "bundled-deep.json" else set()), path

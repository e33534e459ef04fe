"""rskip-gpu-check without a GPU: its one error line, its help, its comparisons,
and its checks' CPU paths end to end (``--device cpu``)."""

import json
import sys

import pytest
import torch

from conftest import run

from fairseq_rskip.tools.gpu_check import against_float32
from fairseq_rskip.tools.gpu_check import checks as gpu_check

COMMAND = [sys.executable, "-m", "fairseq_rskip.tools.gpu_check.cli"]


def test_without_a_gpu_one_error_line_and_status_2(tmp_path):
    proc = run([*COMMAND, "--out", tmp_path], check=False)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]  # one line
    assert proc.stderr.startswith("error: no GPU:") and "torch.cuda.is_available() is False" in proc.stderr
    assert not (tmp_path / "report.md").exists()


def test_help_lists_every_check():
    out = run([*COMMAND, "--help"]).stdout
    for name in gpu_check.CHECKS:
        assert f"\n  {name} " in out
    for words in ("--fp16", "--amp", "pytorch_ddp", "--update-freq", "FusedAdam", "bf16"):
        assert words in out


def test_an_unknown_row_is_refused(tmp_path):
    proc = run([*COMMAND, "--device", "cpu", "--rows", "nope", "--out", tmp_path], check=False)
    assert proc.returncode == 2 and "error: --rows nope: not rows of the table" in proc.stderr


def fake_run(folder, weights, losses):
    folder.mkdir(parents=True)
    torch.save({"model": weights}, folder / "checkpoint_last.pt")
    (folder / "train_inner.json").write_text(json.dumps([{"loss": str(x)} for x in losses]))
    return folder


def test_a_lost_omega_and_a_diverged_loss_fail(tmp_path):
    float32 = {"layer.omega_init": torch.full((4,), 1.3), "layer.omega_delta": torch.zeros(4),
               "layer.weight": torch.ones(4, 4)}
    lost = dict(float32, **{"layer.omega_init": torch.ones(4)})
    reference = fake_run(tmp_path / "float32", float32, [5.0, 4.9, 4.8])
    same = fake_run(tmp_path / "same", float32, [5.0, 4.9, 4.8])
    outcome = against_float32.compare_with_float32("fp16", "admin", same, reference, decoded=False)
    assert outcome.ok, outcome.detail
    outcome = against_float32.compare_with_float32("fp16", "admin", fake_run(tmp_path / "lost", lost, [5.0, 4.9, 4.8]),
                                             reference, decoded=False)
    assert not outcome.ok and "Admin's omega 23.08 % from float32's (pass: 1 %)" in outcome.detail
    outcome = against_float32.compare_with_float32("fp16", "admin", fake_run(tmp_path / "nan", float32, [5.0, float("nan"), 4.8]),
                                             reference, decoded=False)
    assert not outcome.ok and "expected 3 finite" in outcome.detail
    outcome = against_float32.compare_with_float32("fp16", "admin", fake_run(tmp_path / "off", float32, [5.0, 4.95, 4.8]),
                                             reference, decoded=False)
    assert not outcome.ok and "training loss 0.050 from float32's" in outcome.detail
    # decoding that produced no hypotheses fails too
    outcome = against_float32.compare_with_float32("fp16", "admin", same, reference, decoded=True)
    assert not outcome.ok and "0 finite hypotheses of 40" in outcome.detail


def test_update_units_tell_other_batches_from_rounding():
    a = {"w": torch.zeros(100)}
    assert against_float32.update_units({"w": torch.full((100,), 1e-7)}, a) < 1e-3
    assert against_float32.update_units({"w": torch.full((100,), against_float32.LR)}, a) > 0.3


@pytest.mark.slow
def test_cpu_paths_end_to_end(tmp_path):
    """Every check on CPU for Admin, whose profiled omega is the value a wrapper
    could lose: --fp16 (FP16Optimizer without flattening) resumed and decoded,
    --amp, --bf16 (stock: fairseq's TPU path; then its bfloat16 path), the
    benchmark --quick in fp16 and bf16; DDP and fused Adam skipped."""
    proc = run([*COMMAND, "--device", "cpu", "--rows", "admin", "--out", tmp_path])
    report = (tmp_path / "report.md").read_text()
    assert report in proc.stdout
    assert "CPU only" in report
    for check in ("fp16", "amp", "bf16"):
        assert f"| {check} | admin | pass | " in report
    assert "| bf16 | stock | - | stock fairseq-train --bf16 stops (fairseq 0.12.3.1 sets --tpu with it): " in report
    assert "| ddp | all | - | skipped: 0 GPU visible" in report
    assert "| fused-adam | all | - | skipped on CPU |" in report
    for precision in ("fp16", "bf16"):
        assert f"| benchmark | {precision} | - | train/generation x Post-LN: admin " in report
    assert "3 checks passed, 0 failed" in report
    assert "Loaded checkpoint" in (tmp_path / "fp16.log").read_text()  # resumed at update 2

"""``rskip-gpu-check``: every family trains and decodes on this machine's GPUs
along the paths researchers use there, each against float32 training of the
same batches.

Every run is stock fairseq-train (and fairseq-generate) on a small synthetic
corpus, ``UPDATES`` updates of each family's tiny size (one row per family of
the table of variants, :func:`fairseq_rskip.variants.family_rows`), several
runs to a process (:mod:`fairseq_rskip.tools.gpu_check.fairseq_runs`).
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.fairseq_tools import child_env
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.machine import machine_description
from fairseq_rskip.tools.gpu_check.against_float32 import (
    LR,
    TEST_SENTENCES,
    UPDATES,
    Outcome,
    compare_with_float32,
    test_sentences,
    update_units,
    weights,
)

# the runs' fairseq-train options: tiny batches, no dropout (runs in other
# precisions or on other devices see the same computation)
TRAIN_FLAGS = (
    "--optimizer", "adam", "--lr", str(LR),
    "--dropout", "0", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--seed", "3", "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "json",
    "--log-interval", "1", "--required-batch-size-multiple", "1",
)
# What --help lists; each check's runs and what passes.
CHECKS = {
    "fp16": "--fp16 (fairseq's FP16Optimizer, flattened float32 copy; initial loss scale 16) for "
            "every family: losses within 0.02 of float32 training's, every parameter within Adam's "
            "steps of it, Admin's omega within 1 %; trained to 2 updates, resumed to 3, then "
            "fairseq-generate --fp16 decodes the test set",
    "amp": "--amp (AMPOptimizer, torch.cuda.amp) for every family: the same, decoded in float32",
    "bf16": "--bf16: what stock fairseq-train does with it (fairseq 0.12.3.1 sends it to its TPU "
            "path), then, with that --tpu reset after parsing, its bfloat16 path (FP16Optimizer, no "
            "loss scaling) for every family: losses within 0.06 of float32's, parameters within "
            "Adam's steps and a bfloat16 rounding, Admin's omega within 1 %, decoded in float32",
    "ddp": "--ddp-backend pytorch_ddp on every visible GPU against one GPU with --update-freq N "
           "(float32): the same parameters within float32 tolerance (skipped with one GPU)",
    "fused-adam": "which Adam fairseq picks here (apex's FusedAdam where installed) and that the "
                  "runs above used it",
    "first-step": "the largest loss scale (a power of 2) at which each family's first float16 "
                  "backward is finite, against fairseq's initial 128 (figures)",
    "benchmark": "the benchmark's training and generation ratios to Post-LN with --device cuda, "
                 "--precision fp16 and bf16 (iwslt_de_en size)",
}


# -- runs ---------------------------------------------------------------------------


class Runner:
    """Trains rows under one set of flags in a child process (one CUDA context a mode)."""

    def __init__(self, out: Path, data: Path, rows: Sequence[str], device: str, max_tokens: int):
        self.out, self.data, self.rows, self.device = out, data, list(rows), device
        self.max_tokens = max_tokens
        self.logs: Dict[str, str] = {}  # mode -> its child's output

    def train(self, mode: str, flags: Sequence[str], stops=(UPDATES,), decode=False,
              bf16_without_tpu: bool = False, rows: Optional[Sequence[str]] = None) -> subprocess.CompletedProcess:
        # one device unless the flags say otherwise (fairseq's default is every GPU)
        base = ["--cpu"] if self.device == "cpu" else ["--distributed-world-size", "1"]
        rows = list(rows or self.rows)
        cmd = [sys.executable, "-m", "fairseq_rskip.tools.gpu_check.fairseq_runs", *rows,
               "--data", str(self.data), "--out", str(self.out / mode), "--stops", *map(str, stops),
               *(["--generate"] if decode else []), *(["--bf16-without-tpu"] if bf16_without_tpu else []),
               "--", *TRAIN_FLAGS, "--max-tokens", str(self.max_tokens), *base, *flags]
        write(f"  {mode}: training {len(rows)} rows ({' '.join(flags) or 'float32'}"
              + (", --tpu reset" if bf16_without_tpu else "") + ")")
        log = self.out / f"{mode}.log"
        with open(log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True,
                                  env={**child_env(), "PYTHONWARNINGS": "ignore"})
        self.logs[mode] = log.read_text()
        if proc.returncode != 0:
            write(f"  {mode}: failed (exit {proc.returncode}); log {log}")
        return proc


def half_precision_flags(device: str) -> Dict[str, List[str]]:
    """The ``fp16`` and ``amp`` paths. On CPU (``--device cpu``, for testing
    this tool): FP16Optimizer without flattening (the flat copy needs CUDA),
    a loss scale that does not overflow (fairseq's CPU path crashes on an
    overflow), and --amp in float32 (torch.cuda.amp is off without CUDA)."""
    if device == "cpu":
        return {"fp16": ["--fp16", "--fp16-no-flatten-grads", "--fp16-init-scale", "4"], "amp": ["--amp"]}
    # a loss scale below every family's first-step overflow on the synthetic corpus
    # (check first-step), so that no update is skipped and the runs see float32's batches
    return {"fp16": ["--fp16", "--fp16-init-scale", "16"], "amp": ["--amp"]}


def check_stock_bf16(runner: Runner) -> Outcome:
    """What stock fairseq-train does with ``--bf16`` (one row, one update)."""
    proc = runner.train("bf16-stock", ["--bf16"], stops=(1,), rows=runner.rows[:1])
    if proc.returncode == 0:
        return Outcome("bf16", "stock", None, "stock fairseq-train --bf16 trained")
    log = runner.logs["bf16-stock"]
    last = [line for line in log.splitlines() if line.strip()][-1:] or ["(no output)"]
    return Outcome("bf16", "stock", None, f"stock fairseq-train --bf16 stops (fairseq 0.12.3.1 sets --tpu "
                   f"with it): {last[0][-160:]}")


def check_training(runner: Runner, checks: Sequence[str] = ("fp16", "amp")) -> List[Outcome]:
    outcomes = []
    reference = runner.train("float32", [])
    paths = half_precision_flags(runner.device)
    runs = {}
    if "fp16" in checks:
        runs["fp16"] = runner.train("fp16", paths["fp16"], stops=(2, UPDATES), decode=True)
    if "amp" in checks:
        runs["amp"] = runner.train("amp", paths["amp"], decode=True)
    if "bf16" in checks:
        outcomes.append(check_stock_bf16(runner))
        runs["bf16"] = runner.train("bf16", ["--bf16"], decode=True, bf16_without_tpu=True)
    sentences = test_sentences(runner.data)
    for check, proc in runs.items():
        for row in runner.rows:
            if reference.returncode != 0 or proc.returncode != 0:
                failed = "float32" if reference.returncode != 0 else check
                outcomes.append(Outcome(check, row, False, f"the {failed} runs failed: {runner.out}/{failed}.log"))
                continue
            outcomes.append(compare_with_float32(check, row, runner.out / check / row,
                                                 runner.out / "float32" / row, decoded=True,
                                                 sentences=sentences))
    return outcomes


def check_ddp(runner: Runner, gpus: int) -> List[Outcome]:
    if gpus < 2:
        return [Outcome("ddp", "all", None, f"skipped: {gpus} GPU visible, pytorch_ddp needs 2 or more")]
    single = runner.train("ddp-1gpu", ["--distributed-world-size", "1", "--update-freq", str(gpus)])
    ddp = runner.train("ddp", ["--distributed-world-size", str(gpus), "--ddp-backend", "pytorch_ddp"])
    outcomes = []
    for row in runner.rows:
        if single.returncode != 0 or ddp.returncode != 0:
            outcomes.append(Outcome("ddp", row, False, f"runs failed: {runner.out}/ddp*.log"))
            continue
        units = update_units(weights(runner.out / "ddp" / row), weights(runner.out / "ddp-1gpu" / row))
        outcomes.append(Outcome("ddp", row, units <= 0.05,
                                f"{gpus} GPUs vs 1 with --update-freq {gpus}: {units:.4f} of the updates "
                                "apart (pass: 0.05)"))
    return outcomes


def check_fused_adam(logs: Dict[str, str]) -> Outcome:
    from fairseq.optim.fused_adam import get_fused_adam_class

    picked = get_fused_adam_class()
    if picked is None:
        return Outcome("fused-adam", "all", None, "apex's FusedAdam is not installed: fairseq uses its own Adam")
    if not logs:
        return Outcome("fused-adam", "all", None, f"fairseq picks {picked.__name__}; no runs to check "
                       "(--checks without fp16, amp or ddp)")
    used = [mode for mode, log in logs.items() if "using FusedAdam" in log]
    return Outcome("fused-adam", "all", len(used) == len(logs),
                   f"fairseq picks {picked.__name__}; used by the {', '.join(used) or 'no'} runs")


def check_benchmark(out: Path, device: str, rows: Sequence[str]) -> List[Outcome]:
    """The benchmark of the rows (every candidate of the benchmark among them)."""
    from fairseq_rskip.variants import plugin_rows

    candidates = set(plugin_rows())
    archs = [r for r in rows if r in candidates]
    outcomes = []
    for precision in ("fp16", "bf16"):
        json_out = out / f"benchmark-{precision}.json"
        flags = ["--quick"] if device == "cpu" else ["--size", "iwslt_de_en", "--reps", "3", "--steps", "4"]
        flags += ["--archs", *archs] if archs else []
        cmd = [sys.executable, "-m", "fairseq_rskip.tools.benchmark.cli", "--device", device,
               "--precision", precision, "--mem-reps", "0", *flags, "--json-out", str(json_out)]
        write(f"  benchmark: --device {device} --precision {precision}")
        with open(out / f"benchmark-{precision}.log", "w") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env()).returncode
        if code != 0 or not json_out.exists():
            outcomes.append(Outcome("benchmark", precision, False, f"failed: {out}/benchmark-{precision}.log"))
            continue
        result = json.loads(json_out.read_text())
        ratios = ", ".join(f"{n} {result['train_ratio'][n]:.2f}/{result['gen_ratio'][n]:.2f}"
                           for n in result["names"] if n != "postln")
        outcomes.append(Outcome("benchmark", precision, None, f"train/generation x Post-LN: {ratios}"))
    return outcomes


def largest_finite_loss_scale(model, criterion, sample, max_exponent: int = 24) -> int:
    """The largest ``2**k`` (``k <= max_exponent``) at which the backward pass of
    ``2**k`` times the summed loss of ``sample`` leaves every gradient of the
    float16 ``model`` finite, as fairseq's dynamic loss scaler needs; 0 if none."""
    import torch

    loss, _, _ = criterion(model, sample)
    low, high = -1, max_exponent  # the answer lies in (low, high]; -1: none
    while low < high:
        k = (low + high + 1) // 2
        model.zero_grad()
        (loss * 2.0**k).backward(retain_graph=True)
        finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        low, high = (k, high) if finite else (low, k - 1)
    return 0 if low < 0 else 2**low


def check_first_step(data: Path, rows: Sequence[str], device: str, max_tokens: int) -> List[Outcome]:
    """:func:`largest_finite_loss_scale` of each row at initialisation, in
    training mode, on the first training batch of the runs' size."""
    import torch
    from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion

    from fairseq_rskip.tools.common import modelbuild
    from fairseq_rskip.variants import VARIANTS

    task, (batch, *_) = modelbuild.data_bin_batches(str(data), VARIANTS["postln"].fairseq_arch("tiny"),
                                                   split="train", max_tokens=max_tokens, n_batches=1)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    batch["net_input"] = {k: v.to(device) for k, v in batch["net_input"].items()}
    criterion = LabelSmoothedCrossEntropyCriterion(task, sentence_avg=False, label_smoothing=0.1)
    outcomes = []
    for row in rows:
        model, _ = modelbuild.build_variant(VARIANTS[row], "tiny", ["--dropout", "0"], seed=3,
                                            dictionary=task.source_dictionary,
                                            tgt_dictionary=task.target_dictionary)
        model = model.to(device).half().train()
        scale = largest_finite_loss_scale(model, criterion, batch)
        outcomes.append(Outcome("first-step", row, None,
                                f"first float16 backward finite up to loss scale {scale}"
                                + (" (fairseq starts at 128: it overflows)" if scale < 128 else "")))
    return outcomes


# -- the whole check ------------------------------------------------------------------


def machine_lines(device: str) -> List[str]:
    """The machine (:func:`machine_description`), and on CPU what the checks then test."""
    lines = [machine_description()]
    if device != "cuda":
        lines.append("CPU only: the checks' CPU paths, for testing this tool")
    return lines


def run_checks(out: Path, rows: Sequence[str], checks: Sequence[str], device: str = "cuda",
               data: Optional[Path] = None, max_tokens: int = 400) -> List[Outcome]:
    """The checks on ``data`` (default: a synthetic corpus made in ``out``),
    ``max_tokens`` a batch."""
    from fairseq_rskip.tools.common.synthetic import make_synthetic_databin

    import torch

    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = make_synthetic_databin(out / "data-bin", n_train=400, n_valid=40, n_test=TEST_SENTENCES)
    runner = Runner(out, data, rows, device, max_tokens)
    outcomes = []
    if {"fp16", "amp", "bf16"} & set(checks):
        outcomes += check_training(runner, checks)
    if "ddp" in checks:
        outcomes += check_ddp(runner, torch.cuda.device_count() if device == "cuda" else 0)
    if "fused-adam" in checks:
        trained = {mode: log for mode, log in runner.logs.items() if mode != "bf16-stock"}
        outcomes.append(check_fused_adam(trained) if device == "cuda"
                        else Outcome("fused-adam", "all", None, "skipped on CPU"))
    if "first-step" in checks:
        outcomes += check_first_step(data, rows, device, max_tokens)
    if "benchmark" in checks:
        outcomes += check_benchmark(out, device, rows)
    return outcomes


def report(outcomes: Sequence[Outcome], device: str) -> str:
    mark = {True: "pass", False: "FAIL", None: "-"}
    lines = ["# rskip-gpu-check", "", *machine_lines(device), "",
             "| check | row | result | detail |", "|---|---|---|---|"]
    lines += [f"| {o.check} | {o.row} | {mark[o.ok]} | {o.detail} |" for o in outcomes]
    failed = sum(o.ok is False for o in outcomes)
    lines += ["", f"{sum(o.ok is True for o in outcomes)} checks passed, {failed} failed"]
    return "\n".join(lines) + "\n"

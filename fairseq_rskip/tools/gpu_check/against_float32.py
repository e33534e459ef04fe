"""A run trained along a GPU path against float32 training of the same batches: its
losses, its parameters within Adam's steps, Admin's omega, its decoding."""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

UPDATES, LR = 3, 2e-3
# a training loss (label-smoothed, base 2) against float32's at the same update
LOSS_TOLERANCE = 0.02
# bfloat16 keeps 8 bits of mantissa to float16's 11: its losses and its
# rounding of a weight get wider bounds (tests/test_half_precision.py measured
# 0.014 for --bf16's loss)
BF16_LOSS_TOLERANCE = 0.06
ROUNDING = {"fp16": 2.0**-10, "amp": 2.0**-10, "bf16": 2.0**-7}
# Admin's omega against float32 training's, relative: the profile is taken on
# the half-precision forward pass (measured 0.37 % under --fp16 on the CPU path
# of the synthetic corpus, 0.41 % with --bf16), then rounded to the model's type
OMEGA_TOLERANCE = 0.01
TEST_SENTENCES = 40  # of the synthetic corpus


@dataclass
class Outcome:
    check: str
    row: str
    ok: Optional[bool]  # None: skipped, or a figure with no pass mark
    detail: str


# -- comparisons ----------------------------------------------------------------------


def adam_step_bound(reference, updates: int = UPDATES, lr: float = LR, rounding: float = 2.0**-10):
    """How far two runs of the same batches may be apart, element by element:
    an Adam step moves an element by about ``lr`` whatever its gradient, so
    ``2 * updates * lr`` (every step of the other sign), plus a rounding of the
    weight, ``rounding * |reference|`` (float16's ``2**-10`` by default)."""
    return 2 * updates * lr + rounding * reference.abs()


def worst_step_ratio(half: Dict, float32: Dict, updates: int = UPDATES, lr: float = LR,
                     rounding: float = 2.0**-10) -> float:
    """The largest ``|half - float32| / adam_step_bound`` over every element of
    every floating-point parameter (1 and below: within the bound)."""
    worst = 0.0
    for key, value in float32.items():
        if value.is_floating_point():
            bound = adam_step_bound(value.double(), updates, lr, rounding)
            ratio = (half[key].double() - value.double()).abs() / bound
            worst = max(worst, float(ratio.max()))
    return worst


def omega_error(half: Dict, float32: Dict) -> Optional[float]:
    """The largest relative difference of Admin's omega between two runs' states (None
    without omega)."""
    from fairseq_rskip.modules.admin_profile import admin_omegas

    ours, reference = admin_omegas(half), admin_omegas(float32)
    if not reference:
        return None
    return max(float(((ours[k] - v).abs() / v.abs()).max()) for k, v in reference.items())


def update_units(a: Dict, b: Dict, updates: int = UPDATES, lr: float = LR) -> float:
    """The largest ``||a - b|| / (updates * lr * sqrt(numel))`` over the
    parameters: how much of the movement of ``updates`` Adam steps two runs
    disagree on (runs with other batches or another gradient: order 1)."""
    return max(
        float((a[k].double() - v.double()).norm() / (updates * lr * math.sqrt(v.numel())))
        for k, v in b.items() if v.is_floating_point()
    )


def hypotheses(path: Path) -> List[float]:
    """The scores of fairseq-generate's hypotheses (``H-`` lines) in ``path``."""
    if not path.exists():
        return []
    return [float(line.split("\t")[1]) for line in path.read_text().splitlines() if line.startswith("H-")]


def training_losses(save_dir: Path) -> List[float]:
    path = save_dir / "train_inner.json"
    return [float(r["loss"]) for r in json.loads(path.read_text())] if path.exists() else []


def weights(save_dir: Path) -> Dict:
    import torch

    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu")["model"]


def test_sentences(data: Path) -> int:
    """The number of sentence pairs in the test split of a fairseq data-bin."""
    from fairseq.data import indexed_dataset

    for idx in sorted(Path(data).glob("test.*-*.*.idx")):
        return len(indexed_dataset.make_dataset(str(idx)[: -len(".idx")], impl="mmap"))
    return 0


def compare_with_float32(check: str, row: str, run: Path, float32: Path, decoded: bool,
                         sentences: int = TEST_SENTENCES) -> Outcome:
    """A row trained under ``check``'s path against the float32 run; with
    ``decoded``, its decoding of the ``sentences`` of the test split."""
    losses = training_losses(run)
    if len(losses) != UPDATES or not all(math.isfinite(x) for x in losses):
        return Outcome(check, row, False, f"training losses {losses}: expected {UPDATES} finite")
    half, reference = weights(run), weights(float32)
    rounding = ROUNDING.get(check, ROUNDING["fp16"])
    ratio, omega = worst_step_ratio(half, reference, rounding=rounding), omega_error(half, reference)
    loss_gap = max(abs(a - b) for a, b in zip(losses, training_losses(float32)))
    loss_tolerance = BF16_LOSS_TOLERANCE if check == "bf16" else LOSS_TOLERANCE
    problems = []
    if loss_gap > loss_tolerance:
        problems.append(f"training loss {loss_gap:.3f} from float32's (pass: {loss_tolerance})")
    if ratio > 1:
        problems.append(f"parameters {ratio:.2f} x the bound from float32's")
    if omega is not None and omega > OMEGA_TOLERANCE:
        problems.append(f"Admin's omega {100 * omega:.2f} % from float32's (pass: {100 * OMEGA_TOLERANCE:g} %)")
    scores = hypotheses(run / "generate-test.txt") if decoded else []
    if decoded and (len(scores) != sentences or not all(math.isfinite(s) for s in scores)):
        problems.append(f"fairseq-generate: {len(scores)} finite hypotheses of {sentences}")
    detail = f"loss {losses[-1]:.3f} ({loss_gap:.3f} from float32's), parameters {ratio:.2f} x bound" + (
        f", omega {100 * omega:.2f} %" if omega is not None else "") + (
        f", {len(scores)} sentences decoded" if decoded else "")
    return Outcome(check, row, not problems, "; ".join(problems) or detail)

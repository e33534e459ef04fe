#!/usr/bin/env python
"""Validation loss against updates of a comparison's runs, against a reference's budget.

    python benchmarks/training_curves.py --out work/sf-curves --depth 6 \
        --archs postln uspa espa value_skipinit vanilla --budget 600 --at 100 200 600 1200 \
        --figure docs/img/shortcut_free_curves_d6.png

Reads the runs of an ``rskip-reproduce`` output folder (``runs/<arch>-d<depth>-s<seed>/
train.log``, fairseq's JSON log) and prints a Markdown table: per run, the
validation loss at each ``--at`` update, the best one, the first validated
update at or below the reference's loss at ``--budget`` updates (and that
update as a multiple of the budget), and the median logged gradient norm
(fairseq's ``gnorm``) over the first 200 updates and over the rest. With
``--figure``, two panels: the validation curves with the reference's loss at
its budget as a dashed line, and the logged gradient norms.
"""

import argparse
import math
import statistics
import sys
from pathlib import Path

from fairseq_rskip.analysis.trainlog import json_record, parse_train_log
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.variants import VARIANTS


def read_run(path: Path):
    """``(valid curve [(update, loss)], gradient norms [(update, gnorm)])`` of a train.log."""
    text = path.read_text(encoding="utf-8")
    curve = [(int(u), float(l)) for u, l in parse_train_log(text)["valid_curve"]]
    gnorms = []
    for line in text.splitlines():
        parsed = json_record(line)
        if parsed and parsed[0] == "train_inner" and "gnorm" in parsed[1]:
            gnorms.append((int(float(parsed[1]["num_updates"])), float(parsed[1]["gnorm"])))
    return curve, gnorms


def first_at_or_below(curve, target):
    return next((u for u, l in curve if math.isfinite(l) and l <= target), None)


def median_between(points, low, high):
    values = [v for u, v in points if low < u <= high and math.isfinite(v)]
    return statistics.median(values) if values else math.nan


def label(arch: str) -> str:
    return VARIANTS[arch].label if arch in VARIANTS and VARIANTS[arch].label else arch


def plot(runs, reference_loss, budget, reference, path):
    from fairseq_rskip.analysis.figures import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, (curve, gnorms)) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        if curve:
            left.plot(*zip(*curve), color=colour, marker=".", label=name)
        if gnorms:
            right.plot(*zip(*gnorms), color=colour, label=name, alpha=0.85)
    if reference_loss is not None:
        left.axhline(reference_loss, color="grey", linestyle="--", linewidth=1,
                     label=f"{label(reference)} at {budget} updates")
    left.axvline(budget, color="grey", linestyle=":", linewidth=1)
    left.set_xlabel("updates")
    left.set_ylabel("validation loss (label-smoothed, bits)")
    left.grid(alpha=0.3)
    left.legend()
    right.set_yscale("log")
    right.set_xlabel("updates")
    right.set_ylabel("gradient norm (fairseq's gnorm, per logged interval)")
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", required=True, help="an rskip-reproduce output folder")
    p.add_argument("--archs", nargs="+", required=True, help="run names' architectures, in order")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reference", default="postln", help="the reference architecture")
    p.add_argument("--budget", type=int, required=True, help="the reference's budget (updates)")
    p.add_argument("--at", type=int, nargs="+", default=[], help="updates to tabulate")
    p.add_argument("--figure", help="write the figure here (PNG)")
    opts = p.parse_args(argv)
    runs = {}
    for arch in dict.fromkeys([opts.reference, *opts.archs]):
        log = Path(opts.out) / "runs" / f"{arch}-d{opts.depth}-s{opts.seed}" / "train.log"
        if not log.is_file():
            raise UserError(f"no training log {log}: run rskip-reproduce first")
        runs[arch] = read_run(log)
    reference_loss = dict(runs[opts.reference][0]).get(opts.budget)
    if reference_loss is None:
        raise UserError(f"{opts.reference} has no validation at update {opts.budget}")
    print(f"{opts.depth}+{opts.depth} layers; reference: {label(opts.reference)}'s validation "
          f"loss at {opts.budget} updates, {reference_loss:.3f}")
    head = ["model", *[f"at {u}" for u in opts.at], "best", "reaches the reference at",
            "gnorm, updates 1-200", "gnorm, later"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for arch in opts.archs:
        curve, gnorms = runs[arch]
        at = dict(curve)
        reached = first_at_or_below(curve, reference_loss)
        cells = [f"{at[u]:.3f}" if u in at else "-" for u in opts.at]
        best = min((l for _, l in curve if math.isfinite(l)), default=math.nan)
        where = f"{reached} ({reached / opts.budget:.2f}x)" if reached else "not reached"
        print(f"| {label(arch)} | " + " | ".join(cells) + f" | {best:.3f} | {where} | "
              f"{median_between(gnorms, 0, 200):.3g} | "
              f"{median_between(gnorms, 200, math.inf):.3g} |")
    if opts.figure:
        named = {label(a): runs[a] for a in opts.archs}
        print(f"wrote {plot(named, reference_loss, opts.budget, opts.reference, opts.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

#!/usr/bin/env python
"""Validation loss against updates of a comparison's runs, against a reference's budget.

    python benchmarks/training_curves.py --out work/sf-curves --depth 6 \
        --archs postln uspa espa value_skipinit vanilla --budget 600 --at 100 200 600 1200 \
        --figure docs/img/shortcut_free_curves_d6.png
    python benchmarks/training_curves.py --out work/s1 work/s2 --seeds 1 2 3 --depth 6 \
        --archs postln uspa espa --budget 600 --at 100 300 600 --pair espa uspa

Reads the runs of ``rskip-reproduce`` output folders (``runs/<arch>-d<depth>-s<seed>/
train.log``, fairseq's JSON log, from the first folder that has it) and prints a
Markdown table: per model, the validation loss at each ``--at`` update, the best
one, the first validated update at or below the reference's loss at ``--budget``
updates (and that update as a multiple of the budget), and the median logged
gradient norm (fairseq's ``gnorm``) over the first 200 updates and over the rest.
With several ``--seeds``, each cell is the mean over the seeds with their range
(each seed's run is measured against the reference's run of that seed), and
``--pair A B`` adds the paired difference A − B at each ``--at`` update: its mean,
95% t-interval and the per-seed values. With ``--figure``, two panels: the
validation curves with the reference's loss at its budget as a dashed line, and
the logged gradient norms (one line per seed).
"""

import argparse
import math
import statistics
import sys
from pathlib import Path

from fairseq_rskip.tools.common.intervals import t_interval
from fairseq_rskip.tools.common.trainlog import json_record, parse_train_log
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


def find_log(outs, arch: str, depth: int, seed: int) -> Path:
    name = f"{arch}-d{depth}-s{seed}"
    for out in outs:
        log = Path(out) / "runs" / name / "train.log"
        if log.is_file():
            return log
    raise UserError(f"no training log runs/{name}/train.log in {', '.join(map(str, outs))}: "
                    "run rskip-reproduce first")


def summary(values, spec: str = ".3f") -> str:
    """One seed's value, or the mean of several with their range."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return format(values[0], spec)
    mean, low, high = (format(v, spec) for v in (statistics.fmean(values), min(values), max(values)))
    return f"{mean} ({low}-{high})"


def reached_text(reached, budget: int) -> str:
    if len(reached) == 1:
        return f"{reached[0]} ({reached[0] / budget:.2f}x)" if reached[0] else "not reached"
    return "/".join(str(r) if r else "no" for r in reached) + " (per seed)"


def plot(runs, reference_losses, budget, reference, path):
    from fairseq_rskip.tools.common.figures import pyplot, save_figure

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, seeds) in enumerate(runs.items()):
        colour = f"C{i % 10}"
        for j, (curve, gnorms) in enumerate(seeds):
            named = {"label": name} if j == 0 else {}
            if curve:
                left.plot(*zip(*curve), color=colour, marker=".", alpha=0.85, **named)
            if gnorms:
                right.plot(*zip(*gnorms), color=colour, alpha=0.6, **named)
    for j, loss in enumerate(reference_losses):
        named = {"label": f"{label(reference)} at {budget} updates"} if j == 0 else {}
        left.axhline(loss, color="grey", linestyle="--", linewidth=1, **named)
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


def paired_table(runs, first: str, second: str, at) -> None:
    """The differences ``first - second`` of the validation loss, seed by seed."""
    print(f"\n{label(first)} - {label(second)}, validation loss, paired by seed")
    print("| update | mean | 95% interval | per seed |")
    print("|---|---|---|---|")
    pairs = [(dict(a), dict(b)) for (a, _), (b, _) in zip(runs[first], runs[second])]
    for update in at:
        diffs = [a.get(update, math.nan) - b.get(update, math.nan) for a, b in pairs]
        iv = t_interval(diffs)
        if iv is None:
            print(f"| {update} | - | - | - |")
            continue
        interval = "-" if iv["low"] is None else f"{iv['low']:+.3f} to {iv['high']:+.3f}"
        print(f"| {update} | {iv['mean']:+.3f} | {interval} | " + ", ".join(f"{d:+.3f}" for d in diffs) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--out", nargs="+", required=True,
                   help="rskip-reproduce output folders (a run is read from the first that has it)")
    p.add_argument("--archs", nargs="+", required=True, help="run names' architectures, in order")
    p.add_argument("--depth", type=int, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[1], help="the runs' seeds (default: 1)")
    p.add_argument("--reference", default="postln", help="the reference architecture")
    p.add_argument("--budget", type=int, required=True, help="the reference's budget (updates)")
    p.add_argument("--at", type=int, nargs="+", default=[], help="updates to tabulate")
    p.add_argument("--pair", nargs=2, metavar=("A", "B"), action="append", default=[],
                   help="print the paired differences A - B of the validation loss at each --at update "
                   "(repeat for several pairs)")
    p.add_argument("--figure", help="write the figure here (PNG)")
    opts = p.parse_args(argv)
    names = list(dict.fromkeys([opts.reference, *opts.archs, *(a for pair in opts.pair for a in pair)]))
    runs = {arch: [read_run(find_log(opts.out, arch, opts.depth, seed)) for seed in opts.seeds]
            for arch in names}
    reference_losses = [dict(curve).get(opts.budget) for curve, _ in runs[opts.reference]]
    if None in reference_losses:
        raise UserError(f"{opts.reference} has no validation at update {opts.budget}")
    seeds = "seed " + ", ".join(map(str, opts.seeds))
    print(f"{opts.depth}+{opts.depth} layers, {seeds}; reference: {label(opts.reference)}'s validation "
          f"loss at {opts.budget} updates, {summary(reference_losses)}")
    head = ["model", *[f"at {u}" for u in opts.at], "best", "reaches the reference at",
            "gnorm, updates 1-200", "gnorm, later"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for arch in opts.archs:
        by_update = [dict(curve) for curve, _ in runs[arch]]
        cells = [summary([at.get(u, math.nan) for at in by_update]) for u in opts.at]
        best = summary([min((l for _, l in curve if math.isfinite(l)), default=math.nan)
                        for curve, _ in runs[arch]])
        reached = [first_at_or_below(curve, loss) for (curve, _), loss in zip(runs[arch], reference_losses)]
        early = summary([median_between(g, 0, 200) for _, g in runs[arch]], ".3g")
        later = summary([median_between(g, 200, math.inf) for _, g in runs[arch]], ".3g")
        print(f"| {label(arch)} | " + " | ".join(cells) + f" | {best} | {reached_text(reached, opts.budget)} | "
              f"{early} | {later} |")
    for first, second in opts.pair:
        paired_table(runs, first, second, opts.at)
    if opts.figure:
        named = {label(a): runs[a] for a in opts.archs}
        print(f"wrote {plot(named, reference_losses, opts.budget, opts.reference, opts.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

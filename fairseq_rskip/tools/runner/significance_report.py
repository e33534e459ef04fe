"""What the runner's report says of the comparisons against the reference rows
(:func:`fairseq_rskip.tools.runner.significance.compare_runs`): one sentence per
comparison, the table's cells and section, ``comparisons.csv`` and the plot of the
paired differences."""

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional

from fairseq_rskip.file_io import atomic_output
from fairseq_rskip.tools.common.figures import pyplot, save_figure

ALPHA = 0.05  # the significance level the report counts seeds at
# the scores compared, as the runs' records name them, and their labels
METRICS = {"sacrebleu": "sacreBLEU", "chrf": "chrF"}
# every paired difference over seeds: record key -> label
DIFFERENCES = {"best_valid_loss": "best valid loss", "bleu": "BLEU (tok)", **METRICS}
TESTS = {"bs": "paired bootstrap", "ar": "approximate randomisation"}

def signed(value: Optional[float], digits: int) -> str:
    """``+0.40``, ``−0.12`` (a minus sign), ``n/a``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:+.{digits}f}"
    return text.replace("-", "\u2212")


def fmt_p(p: Optional[float]) -> str:
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


DIGITS = {"best_valid_loss": 3, "bleu": 2, "sacrebleu": 2, "chrf": 2}


def interval_text(iv: Optional[dict], digits: int) -> str:
    """``+0.40 [−0.10, +0.90]``, or the mean alone for one seed."""
    if iv is None:
        return "n/a"
    if iv["low"] is None:
        return signed(iv["mean"], digits)
    return f"{signed(iv['mean'], digits)} [{signed(iv['low'], digits)}, {signed(iv['high'], digits)}]"


def p_values(comparison: dict, metric: str, test: str) -> List[float]:
    """The seeds' p-values of one test and metric, in the order of the seeds that have one."""
    return [row["tests"][metric][test]["p"] for row in comparison["per_seed"] if row["tests"]]


def significant_text(ps: List[float], n_seeds: int) -> str:
    hits = sum(p < ALPHA for p in ps)
    if len(ps) == 1 and n_seeds == 1:
        return "significant" if hits else "not significant"
    return f"{hits} of {len(ps)} seeds significant"


def sentence(comparison: dict) -> str:
    """One plain sentence: ``rskip vs postln, depth 3: best valid loss −0.120 [−0.150,
    −0.090] over 3 seeds; sacreBLEU +0.40 [...], paired bootstrap p = 0.030, 0.200, 0.010
    (2 of 3 seeds significant), approximate randomisation p = ... ; chrF ...``."""
    head = f"{comparison['candidate']} vs {comparison['baseline']}"
    if comparison["depth"] is not None:
        head += f", depth {comparison['depth']}"
    n = len(comparison["seeds"])
    if n == 0:
        return f"{head}: no seed where both finished, nothing to compare."
    loss = comparison["intervals"]["best_valid_loss"]
    parts = [f"best valid loss {interval_text(loss, 3)} over {n} seed{'s' if n > 1 else ''}"
             + (" (one seed: no interval)" if n == 1 else "")]
    threshold_said = False
    for metric, label in METRICS.items():
        iv = comparison["intervals"][metric]
        if iv is None:
            continue
        text = f"{label} {interval_text(iv, 2)}"
        for test, test_label in TESTS.items():
            ps = p_values(comparison, metric, test)
            if ps:
                level = "" if threshold_said else f" at p < {ALPHA}"
                threshold_said = True
                text += (f", {test_label} p = {', '.join(fmt_p(p) for p in ps)} "
                         f"({significant_text(ps, n)}{level})")
        parts.append(text)
    missing = sorted({row["tests_missing"] for row in comparison["per_seed"] if row["tests_missing"]})
    if missing and any(comparison["intervals"][m] is not None for m in METRICS):
        parts.append("no paired tests where " + "; ".join(missing))
    return f"{head}: " + "; ".join(parts) + "."


COMPARISON_COLUMNS = [
    ("vs", "vs"), ("paired_seeds", "paired seeds"),
    ("d_best_valid_loss", "Δ best valid loss [95 % CI]"),
    ("d_sacrebleu", "Δ sacreBLEU [95 % CI]"), ("p_sacrebleu_bs", "p sacreBLEU bootstrap"),
    ("p_sacrebleu_ar", "p sacreBLEU AR"),
    ("d_chrf", "Δ chrF [95 % CI]"), ("p_chrf_bs", "p chrF bootstrap"), ("p_chrf_ar", "p chrF AR"),
    ("d_bleu", "Δ BLEU (tok) [95 % CI]"),
]


def comparison_cells(comparison: Optional[dict]) -> Dict[str, str]:
    """A variant's cells of :data:`COMPARISON_COLUMNS` (p-values per seed, ``;``-separated)."""
    if comparison is None:
        return {key: "" for key, _ in COMPARISON_COLUMNS}
    cells = {"vs": comparison["baseline"], "paired_seeds": str(len(comparison["seeds"]))}
    for key in DIFFERENCES:
        cells[f"d_{key}"] = interval_text(comparison["intervals"][key], DIGITS[key]).replace("\u2212", "-")
    for metric in METRICS:
        for test in TESTS:
            ps = p_values(comparison, metric, test)
            cells[f"p_{metric}_{test}"] = "; ".join(fmt_p(p) for p in ps) if ps else "n/a"
    return cells


def p_explained(settings: dict) -> str:
    return ("p: per seed, sacreBLEU's paired bootstrap resampling "
            f"({settings['paired_bs_n']} resamples) and paired approximate randomisation "
            f"({settings['paired_ar_n']} trials), seed {settings['seed']}, on that seed's test "
            f"translations; a seed counts as significant at p < {ALPHA}. The tests resample test "
            "sentences, not training runs: across seeds, read the intervals. ")


def markdown(result: Optional[dict]) -> List[str]:
    """The report's section: how to read it, a table, one sentence per comparison."""
    comparisons = (result or {}).get("comparisons") or []
    missing = [f"- {name}: its reference row, {ref}, is not in this comparison"
               for name, ref in (result or {}).get("unpaired", [])]
    if not comparisons:
        return ["## Against the reference row", ""] + missing if missing else []
    settings = comparisons[0]["settings"]
    lines = [
        "## Against the reference row", "",
        "Each variant against its reference row (`postln`, or `preln` for the Pre-LN rows), "
        "paired: Δ is the variant minus the reference, computed per seed from two runs with the "
        "same seed, then averaged over the seeds where both finished (lower is better for the "
        "loss, higher for sacreBLEU and chrF). [a, b]: the 95 % t-interval of that mean "
        "(mean ± t(0.975, n−1)·s/√n over the n seeds; none from one seed). "
        + (p_explained(settings) if any(row["tests"] for c in comparisons for row in c["per_seed"])
           else "")
        + ("A pair where either run's translations are degenerate (sacreBLEU below 1, few "
           "distinct translations, one token repeated: see the sentences) gets no paired test."
           if any("degenerate" in (row["tests_missing"] or "") for c in comparisons
                  for row in c["per_seed"]) else ""),
        "",
        "| comparison | depth | " + " | ".join(title for _, title in COMPARISON_COLUMNS[1:]) + " |",
        "|" + "---|" * (len(COMPARISON_COLUMNS) + 1),
    ]
    for c in comparisons:
        cells = comparison_cells(c)
        for key in DIFFERENCES:  # a minus sign, as in the sentences
            cells[f"d_{key}"] = cells[f"d_{key}"].replace("-", "\u2212")
        depth = c["depth"] if c["depth"] is not None else "default"
        lines.append(f"| {c['candidate']} vs {c['baseline']} | {depth} | "
                     + " | ".join(cells[key] for key, _ in COMPARISON_COLUMNS[1:]) + " |")
    lines += [""] + [f"- {c['sentence']}" for c in comparisons] + missing
    return lines


SEED_COLUMNS = [
    "candidate", "baseline", "depth", "seed", "d_best_valid_loss", "d_bleu", "d_sacrebleu", "d_chrf",
    "baseline_sacrebleu", "candidate_sacrebleu", "p_sacrebleu_bs", "p_sacrebleu_ar",
    "baseline_sacrebleu_bs_ci", "candidate_sacrebleu_bs_ci",
    "baseline_chrf", "candidate_chrf", "p_chrf_bs", "p_chrf_ar",
    "baseline_chrf_bs_ci", "candidate_chrf_bs_ci", "identical_translations", "candidate_run",
    "baseline_run",
]


def write_comparisons_csv(path: Path, comparisons: List[dict]) -> None:
    """``comparisons.csv``: one row per comparison and seed, the numbers unrounded."""
    def ci(values):
        return f"{values[0]:.4f} {values[1]:.4f}"

    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, SEED_COLUMNS)
        w.writeheader()
        for c in comparisons:
            for row in c["per_seed"]:
                line = {"candidate": c["candidate"], "baseline": c["baseline"], "depth": c["depth"],
                        "seed": row["seed"], "candidate_run": row["candidate_run"],
                        "baseline_run": row["baseline_run"]}
                for key in DIFFERENCES:
                    line[f"d_{key}"] = row[key]
                for metric, t in (row["tests"] or {}).items():
                    line[f"baseline_{metric}"], line[f"candidate_{metric}"] = t["baseline"], t["system"]
                    line[f"p_{metric}_bs"], line[f"p_{metric}_ar"] = t["bs"]["p"], t["ar"]["p"]
                    line[f"baseline_{metric}_bs_ci"] = ci(t["bs"]["baseline_ci"])
                    line[f"candidate_{metric}_bs_ci"] = ci(t["bs"]["system_ci"])
                    line["identical_translations"] = t["identical"]
                w.writerow(line)


def plot_paired_differences(out: Path, comparisons: List[dict]) -> List[Path]:
    """``paired_differences_d<depth>.png``: per comparison, each seed's difference (a filled
    dot where that seed's paired bootstrap is significant) and the mean with its 95 %
    t-interval; one panel per measure, a line at zero."""
    plt = pyplot()

    panels = [("best_valid_loss", "Δ best valid loss (lower: better)"),
              ("sacrebleu", "Δ sacreBLEU"), ("chrf", "Δ chrF")]
    paths = []
    for depth in sorted({c["depth"] for c in comparisons}, key=lambda d: d or 0):
        cs = [c for c in comparisons if c["depth"] == depth and c["seeds"]]
        if not cs:
            continue
        shown = [(k, t) for k, t in panels if any(c["intervals"][k] is not None for c in cs)]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 0.6 * len(cs) + 1.8),
                                 squeeze=False)
        for ax, (key, title) in zip(axes[0], shown):
            for y, c in enumerate(cs):
                for row in c["per_seed"]:
                    if row[key] is None:
                        continue
                    significant = key in METRICS and row["tests"] and row["tests"][key]["bs"]["p"] < ALPHA
                    ax.plot(row[key], y, "o", color="C0", alpha=0.8,
                            markerfacecolor="C0" if significant else "white")
                iv = c["intervals"][key]
                if iv is not None:
                    if iv["low"] is not None:
                        ax.errorbar(iv["mean"], y + 0.25, xerr=[[iv["mean"] - iv["low"]], [iv["high"] - iv["mean"]]],
                                    fmt="s", color="C3", capsize=3)
                    else:
                        ax.plot(iv["mean"], y + 0.25, "s", color="C3")
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(range(len(cs)))
            ax.set_yticklabels([f"{c['candidate']} vs {c['baseline']}" for c in cs])
            ax.set_ylim(-0.6, len(cs) - 0.4)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3, axis="x")
        fig.suptitle(f"paired differences per seed (circles; filled: bootstrap p < {ALPHA}) and "
                     f"mean with 95 % t-interval (squares), depth "
                     f"{depth if depth is not None else 'default'}", fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"paired_differences_d{depth if depth is not None else 'default'}.png", dpi=110))
    return paths

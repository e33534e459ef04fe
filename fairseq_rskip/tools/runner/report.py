"""The comparison's report: ``results.md``, ``results.csv``, ``runs.csv`` and the plots.

``results.md``, ``results.csv``
    one row per architecture and depth: BLEU and chrF mean +- std over seeds,
    best validation loss, updates to reach the target validation loss, target
    tokens per second, peak memory, and how many seeds diverged; each variant
    against its reference row (:mod:`fairseq_rskip.tools.runner.significance`):
    paired differences over seeds with their 95 % t-intervals, the paired
    tests' p-values per seed, and one sentence per comparison.
``runs.csv``
    one row per run, diverged and failed runs included.
``valid_loss_d<depth>.png``
    validation loss against updates, one colour per architecture, one line
    per seed (a cross marks where a diverged run stopped).
``comparisons.csv``, ``comparisons.json``, ``paired_differences_d<depth>.png``
    the comparisons against the reference rows, per seed (written by
    :func:`fairseq_rskip.tools.runner.significance.against_reference_rows`).

Everything here is computed from the runs' records (``result.json``), so
``rskip-reproduce --report-only`` rebuilds it without training.
"""

import csv
import math
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.tools.common.figures import pyplot, save_figure
from fairseq_rskip.tools.runner.significance_report import COMPARISON_COLUMNS, comparison_cells, markdown
from fairseq_rskip.file_io import atomic_output


def fmt(value, digits=2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _mean_std(values: List[float], digits: int) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summarise(records: List[dict], arch_order: Sequence[str]) -> List[dict]:
    """One row per (architecture, depth) over its seeds."""
    groups: Dict[tuple, List[dict]] = {}
    for r in records:
        groups.setdefault((r["arch"], r["depth"]), []).append(r)
    order = {a: i for i, a in enumerate(arch_order)}
    rows = []
    for (arch, depth), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][1] or 0, order.get(kv[0][0], 99), kv[0][0])
    ):
        ok = [r for r in rs if r["status"] == "ok"]
        diverged = [r for r in rs if r["status"] == "diverged"]
        failed = [r for r in rs if r["status"] == "failed"]
        reached = [r["updates_to_target"] for r in ok if r.get("updates_to_target") is not None]
        status = []
        if ok:
            status.append(f"{len(ok)} ok")
        if diverged:
            status.append(f"{len(diverged)} diverged")
        if failed:
            status.append(f"{len(failed)} failed")
        gpu = [r.get("peak_gpu_mem_gb") for r in ok if r.get("peak_gpu_mem_gb") is not None]
        bleus = [r["bleu"] for r in ok if r.get("bleu") is not None]
        sacre = [r["sacrebleu"] for r in ok if r.get("sacrebleu") is not None]
        chrf = [r["chrf"] for r in ok if r.get("chrf") is not None]
        rows.append({
            "arch": arch,
            "fairseq_arch": rs[0].get("fairseq_arch"),
            "depth": depth if depth is not None else "default",
            "seeds": len(rs),
            "status": ", ".join(status),
            "bleu": _mean_std(bleus, 2),
            "sacrebleu": _mean_std(sacre, 2),
            "chrf": _mean_std(chrf, 2),
            "best_valid_loss": _mean_std([r["best_valid_loss"] for r in ok], 3),
            "updates_to_target": (
                f"{statistics.mean(reached):.0f} ({len(reached)}/{len(ok)})" if reached
                else f"not reached (0/{len(ok)})" if ok and ok[0].get("target_valid_loss") is not None
                else "n/a"
            ),
            "tokens_per_s": _mean_std([r["tokens_per_s"] for r in ok], 0),
            "peak_rss_mib": fmt(max((r["peak_rss_mib"] for r in ok), default=None), 0),
            "peak_gpu_mem_gb": fmt(max(gpu), 2) if gpu else "n/a",
            "params": rs[0].get("params") or "n/a",
            "bleu_mean": statistics.mean(bleus) if bleus else None,
        })
    return rows


def divergence_point(record: dict, detail: bool = True) -> Optional[str]:
    """Where a diverged run diverged: ``at update N``, the update fairseq crashed in (its
    ``crash.pt`` holds the updates before), else ``after update N``, the last logged update
    with a finite loss; None for a record that does not say (an earlier runner's)."""
    if "last_finite_update" not in record:
        return None
    last = record["last_finite_update"]
    if record.get("diverged_at_update") is not None:
        return f"at update {record['diverged_at_update']}" + (
            f" (the last logged before it: {last})" if detail else "")
    return f"after update {last}" + (" (the last logged with a finite loss)" if detail else "")


def stopped_at(record: dict) -> str:
    """Where a diverged or failed run stopped, for the list of them."""
    where = divergence_point(record) if record["status"] == "diverged" else None
    return where or f"after {record.get('num_updates')} updates"


def status_cell(record: dict) -> str:
    """A run's status; a diverged run's says at (or after) which update it diverged."""
    where = divergence_point(record, detail=False) if record["status"] == "diverged" else None
    return f"diverged {where}" if where else record["status"]


SUMMARY_COLUMNS = [
    ("arch", "architecture"), ("depth", "depth"), ("seeds", "seeds"), ("status", "status"),
    ("bleu", "BLEU (tok)"), ("sacrebleu", "sacreBLEU"), ("chrf", "chrF"),
    ("best_valid_loss", "best valid loss"),
    ("updates_to_target", "updates to target"), ("tokens_per_s", "target tok/s"),
    ("peak_rss_mib", "peak RSS MiB"), ("peak_gpu_mem_gb", "peak GPU GB"), ("params", "params"),
    ("fairseq_arch", "fairseq --arch"),
]
RUN_COLUMNS = [
    "arch", "depth", "seed", "status", "bleu", "sacrebleu", "chrf", "best_valid_loss",
    "updates_to_target", "tokens_per_s", "peak_rss_mib", "peak_gpu_mem_gb", "num_updates",
    "wall_s", "attempts", "params", "message", "fairseq_arch", "diverged_at_update",
    "last_finite_update", "run",
]


RUN_MD_COLUMNS = 13  # the first RUN_COLUMNS, in results.md


def provenance(records: List[dict]) -> str:
    """When and on what the runs trained: ``Trained on 2026-12-07 on 2 CPUs (...)``, each
    date and machine once; the runs that recorded neither (an earlier version) counted."""
    dates = sorted({r["trained_on"] for r in records if r.get("trained_on")})
    machines = list(dict.fromkeys(r["machine"] for r in records if r.get("machine")))
    unrecorded = sum(1 for r in records if not r.get("machine"))
    text = ""
    if dates:
        text = (f"Trained on {dates[0]}" if len(dates) == 1 else f"Trained from {dates[0]} to {dates[-1]}")
        text += " on " + "; ".join(machines) + "."
    if unrecorded:
        text += (f"{' ' if text else ''}{unrecorded} run{'s' if unrecorded > 1 else ''} "
                 "recorded no date or machine (trained by an earlier version).")
    return text


def write_tables(out: Path, config, records: List[dict], arch_order,
                 comparisons: Optional[dict] = None) -> List[dict]:
    """``comparisons``: :func:`~fairseq_rskip.tools.runner.significance.against_reference_rows`'s."""
    rows = summarise(records, arch_order)
    against = {(c["candidate"], c["depth"]): c for c in (comparisons or {}).get("comparisons", [])}
    with atomic_output(out / "results.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([key for key, _ in SUMMARY_COLUMNS] + [key for key, _ in COMPARISON_COLUMNS])
        for row in rows:
            depth = None if row["depth"] == "default" else row["depth"]
            cells = comparison_cells(against.get((row["arch"], depth)))
            w.writerow([row[key] for key, _ in SUMMARY_COLUMNS]
                       + [cells[key] for key, _ in COMPARISON_COLUMNS])
    with atomic_output(out / "runs.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, RUN_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(records, key=lambda r: (r["depth"] or 0, r["arch"], r["seed"])):
            w.writerow({k: r.get(k) for k in RUN_COLUMNS})
    md = [f"# {config.name}", ""]
    if config.description:
        md += [config.description, ""]
    if records:
        md += [provenance(records), ""]
    target = config.target_valid_loss
    md += [
        "BLEU, chrF: mean ± sample standard deviation over the seeds that finished "
        "(`bleu_tokenized`, `sacrebleu` and `chrf` of rskip-evaluate; n/a with --no-bleu). "
        + (f"Updates to target: first validation with loss <= {target} "
           "(mean over the seeds that reached it). " if target is not None else
           "Updates to target: n/a, no target validation loss set (--target-valid-loss). ")
        + "Target tok/s: fairseq's `wps` "
        "(median of the logged intervals after the first). Peak RSS: the "
        "fairseq-train process's maximum resident set size (interpreter, data and "
        "model together). Diverged runs (non-finite loss) are counted in the status "
        "column and left out of the means.",
        "",
        "| " + " | ".join(title for _, title in SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
    ]
    for row in rows:
        md.append("| " + " | ".join(str(row[key]) for key, _ in SUMMARY_COLUMNS) + " |")
    section = markdown(comparisons)
    if section:
        md += [""] + section
    md += ["", "## Runs", "", "| " + " | ".join(RUN_COLUMNS[:RUN_MD_COLUMNS]) + " |",
           "|" + "---|" * RUN_MD_COLUMNS]
    for r in sorted(records, key=lambda r: (r["depth"] or 0, r["arch"], r["seed"])):
        cells = []
        for k in RUN_COLUMNS[:RUN_MD_COLUMNS]:
            v = status_cell(r) if k == "status" else r.get(k)
            cells.append(fmt(v, 3) if isinstance(v, float) else ("" if v is None else str(v)))
        md.append("| " + " | ".join(cells) + " |")
    problems = [r for r in records if r["status"] != "ok"]
    if problems:
        md += ["", "## Diverged or failed runs", ""]
        md += [f"- {r['arch']} depth {r['depth']} seed {r['seed']}: **{r['status']}** "
               f"{stopped_at(r)}: {r.get('message', '')}" for r in problems]
    plots = sorted(p.name for p in out.glob("valid_loss_*.png"))
    if plots:
        md += ["", "## Validation loss", ""] + [f"![{p}]({p})" for p in plots]
    plots = sorted(p.name for p in out.glob("paired_differences_*.png"))
    if plots:
        md += ["", "## Paired differences per seed", ""] + [f"![{p}]({p})" for p in plots]
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text("\n".join(md) + "\n", encoding="utf-8")
    return rows


def plot_curves(out: Path, records: List[dict], arch_order) -> List[Path]:
    plt = pyplot()

    paths = []
    depths = sorted({r["depth"] for r in records}, key=lambda d: d or 0)
    order = {a: i for i, a in enumerate(arch_order)}
    for depth in depths:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        rs = sorted((r for r in records if r["depth"] == depth),
                    key=lambda r: (order.get(r["arch"], 99), r["seed"]))
        colours = {}
        for r in rs:
            curve = [(u, l) for u, l in r.get("valid_curve", []) if math.isfinite(l)]
            colour = colours.setdefault(r["arch"], f"C{len(colours) % 10}")
            label = r["arch"] if sum(1 for x in rs if x["arch"] == r["arch"] and x["seed"] < r["seed"]) == 0 else None
            if r["status"] == "diverged":
                label = (label + " (diverged)") if label else None
            if curve:
                xs, ys = zip(*curve)
                ax.plot(xs, ys, color=colour, label=label, alpha=0.85, marker=".")
                if r["status"] == "diverged":
                    ax.plot([xs[-1]], [ys[-1]], "x", color=colour, markersize=10)
            elif label:
                ax.plot([], [], color=colour, label=label)
        ax.set_xlabel("updates")
        ax.set_ylabel("validation loss (label-smoothed, base 2)")
        ax.set_title(f"validation loss, depth {depth if depth is not None else 'default'}")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"valid_loss_d{depth if depth is not None else 'default'}.png", dpi=110))
    return paths

"""Whether a difference between two variants is real: each variant against its reference row.

Two kinds of evidence, both paired (the two runs of a pair share the seed, and
are compared on the same test sentences), which cancels what the two share:

- **Per seed, on the test translations**: sacreBLEU's paired bootstrap
  resampling and paired approximate randomisation, BLEU and chrF
  (:mod:`fairseq_rskip.tools.common.paired`). They resample the *test sentences*:
  they say whether the two translations differ by more than the choice of
  sentences explains, not whether the two training recipes do.
- **Across seeds** (:func:`~fairseq_rskip.tools.common.intervals.t_interval`): the per-seed differences, candidate
  minus baseline with the same seed, of best validation loss, BLEU and chrF,
  their mean and its 95 % t-interval ``mean ± t(0.975, n − 1) · s / sqrt(n)``
  (``s``: the differences' sample standard deviation), which assumes the
  differences are independent draws of one normal distribution. One seed
  gives no interval.

:func:`compare_runs` does both for every variant of a comparison against its
baseline, the variant's :attr:`~fairseq_rskip.variants.Variant.reference` row,
reading the translations ``rskip-evaluate`` kept in each run's folder
(``hyp.<subset>.<tgt>`` and ``ref.<subset>.<tgt>``). A pair's test results are
kept in the candidate's run folder (``significance-vs-<baseline run>.json``)
and reused while the translations, the settings and sacreBLEU's version are
the same. What the report says of them is :mod:`~fairseq_rskip.tools.runner.significance_report`.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

from fairseq_rskip.file_io import write_json
from fairseq_rskip.tools.common.degenerate import describe
from fairseq_rskip.tools.common.intervals import LEVEL, t_interval
from fairseq_rskip.tools.runner.significance_report import (
    ALPHA,
    DIFFERENCES,
    plot_paired_differences,
    sentence,
    write_comparisons_csv,
)
from fairseq_rskip.tools.common.paired import (
    PairedSettings,
    paired_test_files,
    sacrebleu_version,
    sha256_of,
)



# ----------------------------------------------------------------------------
# a comparison's runs


def kept_translations(run_dir: Path, record: dict) -> Optional[tuple]:
    """``(translations, references)`` rskip-evaluate kept in a run's folder, or None (a run
    without evaluation, or evaluated by a version that kept none)."""
    ev = record.get("eval") or {}
    if not ev.get("translations") or not ev.get("references_file"):
        return None
    hyp = run_dir / Path(ev["translations"]).name
    ref = run_dir / Path(ev["references_file"]).name
    return (hyp, ref) if hyp.is_file() and ref.is_file() else None


def cached_paired_tests(cache: Path, baseline: Path, system: Path, references: Path,
                        settings: PairedSettings) -> dict:
    """:func:`paired_test_files`, kept in ``cache`` and reused while the three files, the
    settings and sacreBLEU's version are the same."""
    key = {"sha256": {"baseline": sha256_of(baseline), "system": sha256_of(system),
                      "references": sha256_of(references)},
           "settings": asdict(settings), "sacrebleu_version": sacrebleu_version()}
    if cache.is_file():
        try:
            kept = json.loads(cache.read_text(encoding="utf-8"))
            if all(kept.get(k) == v for k, v in key.items()) and "degenerate" in kept:
                return kept  # (an earlier version kept no "degenerate")
        except (json.JSONDecodeError, OSError):
            pass
    result = paired_test_files(baseline, system, references, settings)
    write_json(cache, result)
    return result


def _pairs(records: List[dict], variants: dict) -> List[tuple]:
    """``(depth, candidate, baseline)`` for every variant whose reference row ran too."""
    ran = {(r["arch"], r["depth"]) for r in records}
    pairs = []
    for depth in sorted({r["depth"] for r in records}, key=lambda d: d or 0):
        for name, variant in variants.items():
            ref = variant.reference
            if ref != name and (name, depth) in ran and (ref, depth) in ran:
                pairs.append((depth, name, ref))
    return pairs


def unpaired(records: List[dict], variants: dict) -> List[tuple]:
    """``(variant, reference)`` for the variants that ran but whose reference row did not."""
    ran = {r["arch"] for r in records}
    return [(name, v.reference) for name, v in variants.items()
            if name in ran and v.reference != name and v.reference not in ran]


def compare_runs(out: Path, records: List[dict], variants: dict,
                 settings: PairedSettings = PairedSettings(), progress=None) -> List[dict]:
    """Every variant against its reference row at each depth: per seed (both runs ``ok``)
    the differences of :data:`DIFFERENCES` and, where both runs kept translations, the paired
    tests; over the seeds each difference's :func:`t_interval` and the seeds significant
    at :data:`ALPHA`. ``progress``: called once per paired test done."""
    ok = {(r["arch"], r["depth"], r["seed"]): r for r in records if r.get("status") == "ok"}
    comparisons = []
    for depth, cand, base in _pairs(records, variants):
        seeds = sorted(s for (a, d, s) in ok if a == cand and d == depth and (base, d, s) in ok)
        per_seed = []
        for seed in seeds:
            c, b = ok[(cand, depth, seed)], ok[(base, depth, seed)]
            row = {"seed": seed, "candidate_run": c["run"], "baseline_run": b["run"]}
            for key in DIFFERENCES:
                row[key] = (c[key] - b[key] if c.get(key) is not None and b.get(key) is not None
                            else None)
            row["tests"], row["tests_missing"] = _seed_tests(out, c, b, settings, progress)
            for metric, test in (row["tests"] or {}).items():
                row[metric] = test["delta"]  # unrounded (the records keep 2 decimals)
            per_seed.append(row)
        comparison = {
            "candidate": cand, "baseline": base, "depth": depth, "seeds": seeds,
            "per_seed": per_seed,
            "intervals": {key: t_interval([row[key] for row in per_seed]) for key in DIFFERENCES},
            "settings": asdict(settings), "alpha": ALPHA, "level": LEVEL,
        }
        comparison["sentence"] = sentence(comparison)
        comparisons.append(comparison)
    return comparisons


def _seed_tests(out: Path, cand: dict, base: dict, settings, progress):
    """The paired tests of one seed's two runs, or None and why not."""
    cand_dir, base_dir = out / "runs" / cand["run"], out / "runs" / base["run"]
    c, b = kept_translations(cand_dir, cand), kept_translations(base_dir, base)
    if c is None or b is None:
        return None, "no translations kept"
    if sha256_of(c[1]) != sha256_of(b[1]):
        return None, "the two runs were scored against different references"
    result = cached_paired_tests(cand_dir / f"significance-vs-{base['run']}.json",
                                 b[0], c[0], b[1], settings)
    if progress is not None:
        progress()
    if result["degenerate"]:
        runs = {"baseline": base["run"], "system": cand["run"]}
        named = {runs[role]: reasons for role, reasons in result["degenerate"].items()}
        return None, f"the translations are degenerate ({describe(named)})"
    return result["metrics"], None


def against_reference_rows(out: Path, records: List[dict], variants: dict, config,
                           echo=print) -> dict:
    """The runner's step: :func:`compare_runs` with the configuration's ``"significance"``
    settings, a progress bar over the paired tests, ``comparisons.json``, ``comparisons.csv``
    and the plots written, one sentence per comparison echoed. Returns what the report
    needs: ``{"comparisons": [...], "unpaired": [...]}``."""
    from fairseq_rskip.progress import progress_bar

    settings = PairedSettings.from_config(config.significance)
    with progress_bar(desc="paired tests", unit="pair") as bar:
        comparisons = compare_runs(out, records, variants, settings, progress=lambda: bar.update(1))
    result = {"comparisons": comparisons, "unpaired": unpaired(records, variants)}
    for path in out.glob("paired_differences_d*.png"):
        path.unlink()  # a depth no longer compared keeps no plot
    if comparisons:
        write_json(out / "comparisons.json", result)
        write_comparisons_csv(out / "comparisons.csv", comparisons)
        plot_paired_differences(out, comparisons)
    else:  # none now: none kept from an earlier report
        for name in ("comparisons.json", "comparisons.csv"):
            (out / name).unlink(missing_ok=True)
    for comparison in comparisons:
        echo(comparison["sentence"])
    return result

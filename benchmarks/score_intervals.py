#!/usr/bin/env python
"""Test-set scores of several seeds, summed up by name and paired by seed.

    python benchmarks/score_intervals.py \\
        --eval postln=work/evals/postln-s1-600/eval.json --eval postln=work/evals/postln-s2-600/eval.json \\
        --eval espa=work/evals/espa-s1-2400/eval.json --eval espa=work/evals/espa-s2-2400/eval.json \\
        --pair espa postln

Each ``--eval NAME=FILE`` is the record ``rskip-evaluate --json-out`` writes (or the
runner's ``eval_test.json``); a name given several times is a model's seeds, in seed
order. Printed per name: sacreBLEU, chrF and the distinct translations (read from the
record's ``translations`` file where it still exists), mean and range. ``--pair A B``
pairs the k-th record of A with the k-th of B and prints, for sacreBLEU and chrF, the
differences ``A − B`` and the ratios ``A / B`` per pair, their means and 95 %
t-intervals over the pairs (one pair: no interval).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.tools.common.intervals import mean_and_range, t_interval
from fairseq_rskip.tools.common.paired import read_translations
from fairseq_rskip.tools.common.study_cli import check_pairs, named_files

SCORES = ("sacrebleu", "chrf")


def distinct_translations(record: dict) -> Optional[int]:
    """How many different lines the record's translations file holds; None without it."""
    path = record.get("translations")
    if not path or not Path(path).is_file():
        return None
    return len(set(read_translations(path)))


def load(items: List[str]) -> Dict[str, List[dict]]:
    """``{name: [record, ...]}`` of ``--eval NAME=FILE`` items, in the order given."""
    records: Dict[str, List[dict]] = {}
    for name, path in named_files(items, "--eval"):
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        missing = [score for score in SCORES if score not in record]
        if missing:
            raise UserError(f"--eval {path}: no {', '.join(missing)} in it (not an evaluation record)")
        record["distinct"] = distinct_translations(record)
        records.setdefault(name, []).append(record)
    return records


def _span(values, fmt: str = ".2f") -> str:
    """The mean, and the range where there are several values; "-" for none."""
    values = [v for v in values if v is not None]
    return mean_and_range(values, fmt) if values else "-"


def _interval(values, fmt: str = "+.2f") -> str:
    """The mean and its 95 % t-interval."""
    iv = t_interval(values)
    if iv is None:
        return "-"
    if iv["low"] is None:
        return f"{iv['mean']:{fmt}} (one pair)"
    return f"{iv['mean']:{fmt}} ({iv['low']:{fmt}} to {iv['high']:{fmt}})"


def summary(records: Dict[str, List[dict]]) -> str:
    lines = ["| name | seeds | sacreBLEU | chrF | distinct translations |", "|---|---|---|---|---|"]
    for name, rows in records.items():
        lines.append(f"| {name} | {len(rows)} | {_span(r['sacrebleu'] for r in rows)} | "
                     f"{_span(r['chrf'] for r in rows)} | {_span((r['distinct'] for r in rows), '.0f')} |")
    return "\n".join(lines)


def paired(records: Dict[str, List[dict]], first: str, second: str) -> str:
    a, b = records[first], records[second]
    lines = [f"{first} against {second}, paired by seed (mean and 95% t-interval over {len(a)} pairs):", "",
             "| score | per pair, difference | difference | per pair, ratio | ratio |", "|---|---|---|---|---|"]
    for score in SCORES:
        diffs = [x[score] - y[score] for x, y in zip(a, b)]
        ratios = [x[score] / y[score] if y[score] else float("nan") for x, y in zip(a, b)]
        lines.append(f"| {score} | {', '.join(f'{d:+.2f}' for d in diffs)} | {_interval(diffs)} | "
                     f"{', '.join(f'{r:.2f}' for r in ratios)} | {_interval(ratios, '.2f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--eval", action="append", required=True, metavar="NAME=FILE",
                   help="an evaluation record and its name (repeat; a repeated name is a model's seeds)")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="A against B, the k-th record of A with the k-th of B")
    args = p.parse_args(argv)
    records = load(args.eval)
    check_pairs(args.pair, [name for name, rows in records.items() for _ in rows], "--eval")
    print(summary(records))
    for first, second in args.pair:
        print()
        print(paired(records, first, second))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

"""The files an in-process analysis writes (``rskip-output-change``,
``rskip-signal-propagation``): its records as CSV, its tables as Markdown, its plot."""

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Callable, List, Sequence


def write_records_csv(path: Path, records: Sequence) -> Path:
    """One row per record (a dataclass), its fields as the columns; None as an empty cell."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(records[0])))
        writer.writeheader()
        for r in records:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    return path


def write_analysis_outputs(out: Path, stem: str, records: Sequence, markdown: str,
                           plot: Callable[[Path], Path]) -> List[Path]:
    """``STEM.csv`` (every record), ``STEM.md`` (``markdown``) and ``STEM.png``
    (``plot(path)``) in ``out``, created if missing; their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = write_records_csv(out / f"{stem}.csv", records)
    md_path = out / f"{stem}.md"
    md_path.write_text(markdown, encoding="utf-8")
    return [csv_path, md_path, plot(out / f"{stem}.png")]

"""``rskip-evaluate --compare BASELINE SYSTEM``: are two systems' translations different?

Each of BASELINE and SYSTEM is a checkpoint file, a checkpoint folder (its
best checkpoint, or the average of ``--avg-last N``) or a file of detokenised
translations, one sentence per line in the test set's order (what
``rskip-evaluate`` keeps as ``hyp.SUBSET.TGT``). A checkpoint is first
translated and scored as ``rskip-evaluate`` does, into ``OUT/baseline`` or
``OUT/system``; the same checkpoint given twice is translated once. The
references are ``--references``, else those a translated checkpoint's
evaluation kept, else the data-bin's ``ref.SUBSET.TGT``.

Then both of sacreBLEU's paired tests, for BLEU and chrF
(:func:`fairseq_rskip.tools.common.paired.paired_tests`); the result is printed
and, with ``--out`` or ``--json-out``, written as JSON. Where either system's
translations are degenerate (:mod:`fairseq_rskip.tools.common.degenerate`), the
scores are printed with why, and no p-value.
"""

import argparse
from pathlib import Path
from typing import List, Optional, Tuple

from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import write_json
from fairseq_rskip.scoring.evaluate import evaluate, load_prep_meta
from fairseq_rskip.tools.common.degenerate import describe
from fairseq_rskip.tools.common.paired import PairedSettings, check_count, paired_test_files

ROLES = ("baseline", "system")


def is_checkpoint(path: Path) -> bool:
    """A folder (of checkpoints) or a ``.pt`` file; anything else is a file of translations."""
    return path.is_dir() or path.suffix == ".pt"


def translate(args, path: Path, role: str, extra) -> dict:
    """Evaluate a checkpoint (file or folder) into ``OUT/role``; its JSON record."""
    if args.out is None:
        raise UserError(f"--compare translates {path} (a checkpoint): give --out DIR for its "
                        "translations, or compare files of translations")
    folder = Path(args.out) / role
    side = argparse.Namespace(**{
        **vars(args), "compare": None, "generate_output": None,
        "checkpoint": str(path) if path.is_file() else None,
        "checkpoint_dir": str(path) if path.is_dir() else None,
        "translations_dir": str(folder), "json_out": str(folder / f"eval_{args.subset}.json"),
    })
    return evaluate(side, extra)


def resolve_systems(args, extra) -> Tuple[List[Path], Optional[Path], List[Optional[dict]]]:
    """The two translation files, the references the evaluations kept (None: none
    translated) and each side's evaluation record (None for a file of translations)."""
    paths = [Path(p) for p in args.compare]
    for path in paths:
        if not path.exists():
            raise UserError(f"--compare: {path} not found (give a checkpoint file, a checkpoint "
                            "folder or a file of translations)")
    records: List[Optional[dict]] = [None, None]
    for i, (role, path) in enumerate(zip(ROLES, paths)):
        if not is_checkpoint(path):
            continue
        if i == 1 and is_checkpoint(paths[0]) and path.resolve() == paths[0].resolve():
            records[1] = records[0]  # the same checkpoint: translated once
        else:
            records[i] = translate(args, path, role, extra)
    files = [Path(r["translations"]) if r else p for r, p in zip(records, paths)]
    kept_refs = next((Path(r["references_file"]) for r in records if r), None)
    return files, kept_refs, records


def references_file(args, kept: Optional[Path]) -> Path:
    if args.references:
        path = Path(args.references)
        if not path.is_file():
            raise UserError(f"--references {path} not found")
        return path
    if kept is not None:
        return kept
    if args.data:
        tgt = load_prep_meta(args.data).get("tgt_lang")
        candidates = sorted(Path(args.data).glob(f"ref.{args.subset}.{tgt or '*'}"))
        if candidates:
            return candidates[0]
    raise UserError("--compare of two files of translations needs their references: give "
                    "--references FILE (one per line), or --data DATA_BIN holding "
                    f"ref.{args.subset}.TGT")


def compare(args, extra=()) -> dict:
    """Translate what needs it, run the paired tests; writes and returns the record."""
    for name in ("paired_bs_n", "paired_ar_n", "paired_seed"):
        check_count("--" + name.replace("_", "-"), getattr(args, name), seed=name == "paired_seed")
    if args.generate_output:
        raise UserError("--generate-output scores one system; with --compare give each system's "
                        "translations (hyp.SUBSET.TGT, kept by rskip-evaluate) instead")
    settings = PairedSettings(args.paired_bs_n, args.paired_ar_n, args.paired_seed)
    files, kept_refs, records = resolve_systems(args, extra)
    refs = references_file(args, kept_refs)
    result = paired_test_files(files[0], files[1], refs, settings)
    result["evaluations"] = {role: (r["json"] if r else None) for role, r in zip(ROLES, records)}
    json_out = args.json_out or (str(Path(args.out) / "comparison.json") if args.out else None)
    if json_out:
        write_json(json_out, result)
        result["json"] = json_out
    return result


def summary_lines(result: dict) -> List[str]:
    """What ``rskip-evaluate --compare`` prints: one line per metric, then the signatures."""
    lines = [f"baseline: {result['files']['baseline']}", f"system:   {result['files']['system']}",
             f"references: {result['files']['references']} ({result['num_sentences']} sentences)"]
    degenerate = result.get("degenerate")
    for key, m in result["metrics"].items():
        bs, ar = m["bs"], m["ar"]
        line = f"{m['metric']}: baseline {m['baseline']:.2f}, system {m['system']:.2f}, delta {m['delta']:+.2f}"
        if degenerate:
            lines.append(line + "; no paired test: degenerate translations (below)")
            continue
        line += (f"; paired bootstrap p = {bs['p']:.4f} ({bs['n']} resamples; "
                f"95 % intervals: baseline [{bs['baseline_ci'][0]:.2f}, {bs['baseline_ci'][1]:.2f}], "
                f"system [{bs['system_ci'][0]:.2f}, {bs['system_ci'][1]:.2f}]); approximate "
                f"randomisation p = {ar['p']:.4f} ({ar['n']} trials)")
        if m["identical"]:
            line += "; the two systems' translations are identical"
        lines.append(line)
    if degenerate:
        lines.append(f"degenerate translations, so no significance: {describe(degenerate)} "
                     "(the p-values, in the JSON, mean nothing here)")
    for key, m in result["metrics"].items():
        lines.append(f"signature {m['metric']}: {m['bs']['signature']}; {m['ar']['signature']}")
    if result.get("json"):
        lines.append(f"json: {result['json']}")
    return lines

"""The whole comparison: the plan of its runs (each in the folder of its identity), their
execution one after the other, and the tables, plots and paired tests of their results."""

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.tools.common.child_process import stop_on_signals
from fairseq_rskip.tools.runner.report import plot_curves, write_tables
from fairseq_rskip.tools.runner.config import (
    Config,
    check_data_bin,
    check_train_options,
    evaluation_settings,
    resolve_archs,
)
from fairseq_rskip.tools.runner.execute import DEFAULT_EVALUATE, Evaluator, execute_run
from fairseq_rskip.tools.runner.identity import (
    data_identity,
    identity_differences,
    identity_id,
    recorded_identity,
    run_identity,
)
from fairseq_rskip.tools.runner.runs import Run, train_command
from fairseq_rskip.tools.runner.significance import against_reference_rows
from fairseq_rskip.tools.common.trainlog import updates_to_target
from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import write
from fairseq_rskip.tools.common.paired import PairedSettings
from fairseq_rskip.variants import Variant


def plan_runs(config: Config, variants: Dict[str, Variant], out: Path, data: Path,
              rerun_changed: bool = False) -> List[Run]:
    """Every run of the comparison, each in the folder that holds (or will hold) a run of
    its identity: ``runs/<key>``, else, when that holds a run of other settings,
    ``runs/<key>-<id>`` if it exists or ``rerun_changed``. Refuses (UserError) when a run
    has no such folder, naming the settings that differ."""
    data_id = data_identity(data)
    runs, conflicts = [], []
    for depth in config.depths:
        for seed in config.seeds:
            for name, variant in variants.items():
                run = Run(name, depth, seed, variant, out / "runs")
                run.run_dir = out / "runs" / run.key
                run.identity = run_identity(config, run, data_id)
                recorded = recorded_identity(run.run_dir, run.identity, data)
                if recorded is not None and recorded != run.identity:
                    beside = out / "runs" / f"{run.key}-{identity_id(run.identity)}"
                    if beside.exists() or rerun_changed:
                        run.run_dir = beside
                    else:
                        conflicts.append(f"{run.run_dir}: "
                                         + "; ".join(identity_differences(recorded, run.identity)))
                runs.append(run)
    if conflicts:
        more = f"\n  (and {len(conflicts) - 10} more)" if len(conflicts) > 10 else ""
        raise UserError(
            f"--out {out} holds runs made with other settings than these, which the runner "
            "will not reuse or mix:\n  " + "\n  ".join(conflicts[:10]) + more + "\n"
            "Use another --out, go back to those settings, or give --rerun-changed to train "
            "these runs into new folders beside them (runs/<run>-<id>)."
        )
    return runs


def reproduce(config: Config, out, data=None, archs=None, extra_args: Sequence[str] = (),
              no_bleu: bool = False, evaluate_command: Optional[Sequence[str]] = None,
              dry_run: bool = False, report_only: bool = False, echo=write,
              rerun_changed: bool = False, train_program: Optional[Sequence[str]] = None) -> List[dict]:
    """Run (or resume) the comparison and write tables and plots; returns the summary rows.

    ``extra_args``: fairseq-train options after the variants' flags (added to the
    configuration's ``extra_args``); ``train_program``: a command in place of fairseq-train
    (tests); ``rerun_changed``: see :func:`plan_runs`. ``config.json`` records the
    configuration as the runs used it: the architectures, data-bin and options given here."""
    config = dataclasses.replace(config, extra_args=[*config.extra_args, *extra_args])
    data = check_data_bin(data if data is not None else config.data)
    variants = resolve_archs(config, archs if archs else config.archs)
    for depth in config.depths:
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise UserError(f"depths must be integers >= 1; got {depth!r}")
    check_train_options(config, variants)
    PairedSettings.from_config(config.significance)  # refused now, not after training
    evaluation_settings(config)  # likewise
    config.archs, config.data = list(variants), str(data)
    if no_bleu:
        config.eval = None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluator = None
    if config.eval is not None and not report_only and not dry_run:
        ev = evaluation_settings(config)
        evaluator = Evaluator(
            data, command=evaluate_command or DEFAULT_EVALUATE,
            avg_last=ev["avg_last"], beam=ev["beam"], lenpen=ev["lenpen"], subset=ev["subset"],
            extra=ev["extra_args"], threads=config.threads, checkpoint=ev.get("checkpoint", "best"),
        )
    runs = plan_runs(config, variants, out, data, rerun_changed)
    records = []
    with stop_on_signals():
        for i, run in enumerate(runs, 1):
            if run.result_path.exists():
                record = json.loads(run.result_path.read_text(encoding="utf-8"))
                echo(f"[{i}/{len(runs)}] {run.key}: finished earlier ({record['status']}), skipped")
                records.append(record)
                continue
            if dry_run:
                echo(f"[{i}/{len(runs)}] {run.key}: "
                     f"{shlex.join(train_command(config, run, data, train_program))}")
                continue
            if report_only:
                failed = run.run_dir / "failed.json"
                if failed.exists():
                    records.append(json.loads(failed.read_text(encoding="utf-8")))
                continue
            echo(f"[{i}/{len(runs)}] {run.key}" + (f" (in {run.run_dir.name})"
                                                   if run.run_dir.name != run.key else ""))
            records.append(execute_run(config, run, data, evaluator, echo, train_program))
        if dry_run:
            return []
        for record in records:  # the target may have changed since a run finished
            record["target_valid_loss"] = config.target_valid_loss
            record["updates_to_target"] = updates_to_target(record.get("valid_curve", []),
                                                            config.target_valid_loss)
        write_json(out / "config.json", dataclasses.asdict(config))
        comparisons = against_reference_rows(out, records, variants, config, echo)
        if records:
            plot_curves(out, records, list(variants))
        rows = write_tables(out, config, records, list(variants), comparisons)
    echo(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'runs.csv'}")
    return rows

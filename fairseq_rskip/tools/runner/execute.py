"""Executing one run: fairseq-train with a live progress bar (resumed from its last
checkpoint), then the evaluation of its checkpoints, and the run's result record
(``result.json``; ``failed.json`` for a run to retry)."""

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from fairseq_rskip.tools.common.machine import machine_description, today
from fairseq_rskip.tools.common.child_process import Interrupted, run_logged
from fairseq_rskip.tools.runner.report import divergence_point, fmt
from fairseq_rskip.tools.runner.config import Config
from fairseq_rskip.tools.runner.runs import Run, train_command
from fairseq_rskip.tools.common.trainlog import (
    DIVERGENCE_MARKERS,
    LogFollower,
    TrainProgress,
    parse_train_log,
    updates_to_target,
)
from fairseq_rskip.checkpoint_compat import check_checkpoint_file
from fairseq_rskip.errors import UserError
from fairseq_rskip.fairseq_tools import PLUGIN_DIR
from fairseq_rskip.file_io import locked, write_json
from fairseq_rskip.progress import progress_bar, write

# rskip-evaluate, run by the interpreter running the runner
DEFAULT_EVALUATE = (sys.executable, "-m", "fairseq_rskip.scoring.cli")


def cuda_total_gb() -> Optional[float]:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 1024**3
    except Exception:
        pass
    return None


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(lines[-n:])


def show_train_progress(bar, progress: TrainProgress) -> None:
    """Bring a run's bar up to what its log says: updates of total, latest loss."""
    if bar.disable:
        return
    if progress.total != bar.total:
        bar.total = progress.total
    if progress.resumed_at is not None and bar.n < progress.resumed_at:
        bar.initial = bar.n = bar.last_print_n = progress.resumed_at  # rate from here on
    if progress.loss is not None:
        bar.set_postfix_str(f"loss {progress.loss:.3f}", refresh=False)
    if progress.updates > bar.n:
        bar.update(progress.updates - bar.n)
    bar.refresh()  # also when no update was logged: the elapsed time moves on


def train_with_progress(cmd: Sequence[str], log_path: Path, desc: str,
                        threads: Optional[int] = None) -> dict:
    """:func:`~fairseq_rskip.tools.common.child_process.run_logged` of a fairseq-train command
    with a live bar of its progress."""
    progress = TrainProgress.for_command(cmd)
    follower = LogFollower(log_path)
    with progress_bar(progress.total, desc=desc, unit="upd") as bar:
        def watch():
            for line in follower.new_lines():
                progress.feed(line)
            show_train_progress(bar, progress)

        return run_logged(cmd, log_path, threads, watch)


class Evaluator:
    """Runs an evaluation command (``rskip-evaluate`` by default) on a run's checkpoint
    directory and reads the JSON record it writes there (``eval_<subset>.json``)."""

    def __init__(self, data: Path, command: Sequence[str] = DEFAULT_EVALUATE, avg_last: int = 1,
                 beam: int = 5, lenpen: float = 1.0, subset: str = "test", extra: Sequence[str] = (),
                 threads: Optional[int] = None, checkpoint: str = "best"):
        self.program, self.data = list(command), data
        self.avg_last, self.beam, self.lenpen, self.subset = avg_last, beam, lenpen, subset
        self.checkpoint = checkpoint  # "best", or "last": the run's checkpoint_last.pt
        self.extra = list(extra)
        self.threads = threads
        exe = self.program[0] if self.program else ""
        if not (shutil.which(exe) or Path(exe).is_file()):
            raise UserError(
                f"evaluation command not found: {shlex.join(self.program)} (give "
                "--evaluate-command CMD, or --no-bleu to train and report losses only)"
            )

    def command(self, run: Run) -> List[str]:
        cmd = self.program + ["--data", str(self.data)]
        if self.checkpoint == "last":  # its record goes beside it, in the checkpoint folder
            cmd += ["--checkpoint", str(run.checkpoint_dir / "checkpoint_last.pt")]
        else:
            cmd += ["--checkpoint-dir", str(run.checkpoint_dir)]
        if self.avg_last:  # else rskip-evaluate takes checkpoint_best.pt
            cmd += ["--avg-last", str(self.avg_last)]
        return cmd + ["--beam", str(self.beam), "--lenpen", str(self.lenpen),
                      "--subset", self.subset, "--user-dir", str(PLUGIN_DIR),
                      "--translations-dir", str(run.run_dir)] + self.extra

    def __call__(self, run: Run) -> dict:
        log = run.run_dir / "eval.log"
        with progress_bar(desc=f"{run.key} evaluating", bar_format="{desc} {elapsed}") as bar:
            info = run_logged(self.command(run), log, self.threads, watch=bar.refresh)
        out = run.checkpoint_dir / f"eval_{self.subset}.json"
        if info["returncode"] != 0 or not out.is_file():
            raise RuntimeError(f"evaluation failed (exit {info['returncode']}); see {log}:\n{_tail(log)}")
        return json.loads(out.read_text(encoding="utf-8"))


def crash_update(checkpoint_dir: Path, since: float) -> Optional[int]:
    """The update in which fairseq-train crashed on non-finite gradients: fairseq saves
    ``crash.pt`` with the updates done before it (trainer.py, ``except FloatingPointError``).
    None without a ``crash.pt`` written after ``since`` (a time stamp)."""
    path = checkpoint_dir / "crash.pt"
    try:
        if path.stat().st_mtime < since:
            return None
        import torch

        # weights-only, with the allow-list importing fairseq_rskip set up
        state = torch.load(path, map_location="cpu", mmap=True)
        return int(state["optimizer_history"][-1]["num_updates"]) + 1
    except Exception:  # noqa: BLE001 (no crash.pt, or not one fairseq wrote: fall back on the log)
        return None


def _append_attempt(run: Run, attempt: dict) -> None:
    with open(run.run_dir / "attempts.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(attempt) + "\n")


def execute_run(config: Config, run: Run, data: Path, evaluator: Optional["Evaluator"],
                echo=write, train_program: Optional[Sequence[str]] = None) -> dict:
    """Train (or resume) one run, evaluate it, write and return its result record.

    The run folder is locked meanwhile; an interruption (:class:`Interrupted`) is recorded
    in ``attempts.jsonl`` and raised again."""
    with locked(run.run_dir, what="run folder"):
        if not run.identity_path.exists():
            write_json(run.identity_path, {"run": run.key, "identity": run.identity})
        return _execute_run(config, run, data, evaluator, echo, train_program)


def _execute_run(config, run, data, evaluator, echo, train_program) -> dict:
    log_path = run.run_dir / "train.log"
    trained_marker = run.run_dir / "trained.json"
    cmd = train_command(config, run, data, train_program)
    (run.run_dir / "command.txt").write_text(shlex.join(cmd) + "\n", encoding="utf-8")
    if not trained_marker.exists():
        _train(config, run, cmd, log_path, echo)
    attempts = [json.loads(line) for line in
                (run.run_dir / "attempts.jsonl").read_text(encoding="utf-8").splitlines() if line]
    text = log_path.read_text(encoding="utf-8", errors="replace")
    parsed = parse_train_log(text)
    record = _training_record(config, run, cmd, attempts, parsed)
    last = attempts[-1]
    tail = text[-20000:]
    if parsed["nonfinite_loss"] or (
            last["returncode"] != 0 and any(m in tail for m in DIVERGENCE_MARKERS)):
        return _diverged(run, record, tail, since=last.get("started", 0), echo=echo)
    if last["returncode"] != 0:
        message = f"fairseq-train exited with {last['returncode']}; see {log_path}"
        echo(f"[{run.key}] FAILED: {message}\n{_tail(log_path)}")
        return _failed(run, record, message)
    write_json(trained_marker, {"num_updates": parsed["num_updates"]})
    if evaluator is not None:
        try:
            ev = evaluator(run)
        except RuntimeError as err:
            echo(f"[{run.key}] FAILED: {err}")
            return _failed(run, record, str(err))
        record.update(bleu=ev.get("bleu_tokenized"), eval=ev,
                      **{k: ev.get(k) for k in EVALUATION_FIELDS if k != "bleu"})
    record["status"] = "ok"
    echo(
        f"[{run.key}] done: best valid loss {fmt(record['best_valid_loss'], 3)}, "
        f"BLEU {fmt(record['bleu'], 2)}, chrF {fmt(record['chrf'], 2)}, "
        f"{fmt(record['tokens_per_s'], 0)} tok/s, "
        f"peak RSS {record['peak_rss_mib']:.0f} MiB"
    )
    (run.run_dir / "failed.json").unlink(missing_ok=True)
    write_json(run.result_path, record)
    return record


def _train(config: Config, run: Run, cmd: List[str], log_path: Path, echo) -> None:
    """One attempt of fairseq-train (resuming from ``checkpoint_last.pt`` if there is one),
    recorded in ``attempts.jsonl``."""
    last_checkpoint = run.checkpoint_dir / "checkpoint_last.pt"
    resumed = last_checkpoint.exists()
    if resumed:  # fairseq copies checkpoint_last.pt in place: a kill can leave half of it
        try:
            check_checkpoint_file(last_checkpoint)
        except UserError as err:
            raise UserError(
                f"cannot resume {run.key}: {err}. To go on, move {last_checkpoint.name} away "
                "(fairseq then trains the run from the start) or copy an intact "
                f"checkpoint of {run.checkpoint_dir} in its place") from None
    echo(f"[{run.key}] {'resuming' if resumed else 'training'}: {shlex.join(cmd)}")
    try:
        attempt = train_with_progress(cmd, log_path, run.key, threads=config.threads)
    except Interrupted as err:
        if err.attempt is not None:
            _append_attempt(run, {**err.attempt, "resumed": resumed})
        echo(f"[{run.key}] interrupted ({err.name}): fairseq-train stopped, its checkpoints "
             "kept; run the same command again to resume")
        raise
    _append_attempt(run, {**attempt, "resumed": resumed})


# the evaluation's figures in a result record (None until the run is evaluated)
EVALUATION_FIELDS = ("bleu", "sacrebleu", "sacrebleu_signature", "chrf", "chrf_signature")


def _training_record(config: Config, run: Run, cmd: List[str], attempts: List[dict],
                     parsed: dict) -> dict:
    """A run's result record as its training log and attempts give it."""
    record = {
        "arch": run.arch,
        "fairseq_arch": run.variant.fairseq_arch(config.size),
        "depth": run.depth,
        "seed": run.seed,
        "run": run.run_dir.name,
        "command": shlex.join(cmd),
        "wall_s": round(sum(a["wall_s"] for a in attempts), 2),
        "attempts": len(attempts),
        "peak_rss_mib": max(a["max_rss_mib"] for a in attempts),
        "trained_on": today(), "machine": machine_description(),
        **{k: v for k, v in parsed.items() if k != "nonfinite_loss"},
        "updates_to_target": updates_to_target(parsed["valid_curve"], config.target_valid_loss),
        "target_valid_loss": config.target_valid_loss,
        **dict.fromkeys(EVALUATION_FIELDS),
    }
    total = cuda_total_gb()
    record["peak_gpu_mem_gb"] = (
        round(total - parsed["min_gb_free"], 2) if total and parsed["min_gb_free"] is not None
        else None
    )
    return record


def _diverged(run: Run, record: dict, tail: str, since: float, echo) -> dict:
    """Finish a run whose loss went non-finite: ``result.json`` with status ``diverged``."""
    record["status"] = "diverged"
    record["message"] = next(
        (line.strip() for line in reversed(tail.splitlines())
         if any(m in line for m in DIVERGENCE_MARKERS)),
        "non-finite loss in the log",
    )
    record["diverged_at_update"] = crash_update(run.checkpoint_dir, since=since)
    echo(f"[{run.key}] DIVERGED {divergence_point(record)}: {record['message']}")
    write_json(run.result_path, record)
    return record


def _failed(run: Run, record: dict, message: str) -> dict:
    """A run that failed: ``failed.json``, not finished (the next runner retries it)."""
    record["status"] = "failed"
    record["message"] = message
    write_json(run.run_dir / "failed.json", record)
    return record

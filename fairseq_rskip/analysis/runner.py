"""The comparison runner (``rskip-reproduce``): variants x depths x seeds through ``fairseq-train``.

Every run is a real ``fairseq-train`` subprocess (``--log-format json``,
``--user-dir`` this package's folder) followed, unless ``--no-bleu``, by
``rskip-evaluate`` on its checkpoint directory. Under ``--out`` the runner keeps

``runs/<arch>-d<depth>-s<seed>/``
    ``checkpoints/`` (fairseq's), ``train.log`` (fairseq's output, appended on
    every attempt), ``attempts.jsonl`` (exit status, wall time and peak
    memory of each attempt) and ``result.json``, written once the run is
    finished (trained and evaluated, or diverged). A run whose
    ``result.json`` exists is skipped; any other run is started again and
    fairseq resumes it from ``checkpoints/checkpoint_last.pt``.

and :mod:`fairseq_rskip.analysis.report` writes the tables and plots.
While a run trains, a progress bar (on a terminal) shows its updates done of
the total, the latest training loss, the elapsed time and an estimate of what
is left, read from fairseq's log as it is written.

Memory: on CPU the peak resident set size (``VmHWM`` of
``/proc/PID/status``, polled every 0.5 s) of the ``fairseq-train`` process,
which includes the Python interpreter, fairseq, the data and the model (so it
overstates what the model itself needs); on GPU also
``torch.cuda.max_memory_allocated`` as fairseq reports it (``gb_free`` is the
device total minus that peak).

Architectures are rows of :data:`fairseq_rskip.variants.VARIANTS`, names a
configuration file defines under ``"variants"``, or any registered fairseq
architecture name.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from fairseq_rskip.analysis.report import fmt, plot_curves, write_tables
from fairseq_rskip.analysis.trainlog import (
    DIVERGENCE_MARKERS,
    LogFollower,
    TrainProgress,
    parse_train_log,
    updates_to_target,
)
from fairseq_rskip.errors import UserError
from fairseq_rskip.fairseq_tools import PLUGIN_DIR, child_env, fairseq_executable
from fairseq_rskip.file_io import write_json
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.variants import VARIANTS, Variant

# rskip-evaluate, run by the interpreter running the runner
DEFAULT_EVALUATE = (sys.executable, "-m", "fairseq_rskip.cli.evaluate")


@dataclass
class Config:
    """A comparison: see ``examples/translation/configs/*.json``."""

    name: str = "comparison"
    data: Optional[str] = None
    size: str = "tiny"
    archs: List[str] = field(default_factory=lambda: list(VARIANTS))  # every row of the table
    depths: List[Optional[int]] = field(default_factory=lambda: [None])
    seeds: List[int] = field(default_factory=lambda: [1])
    lr: float = 5e-4
    warmup_updates: int = 4000
    nowarmup_lr: Optional[float] = None
    train_args: List[str] = field(default_factory=list)
    variants: Dict[str, dict] = field(default_factory=dict)
    target_valid_loss: Optional[float] = None
    log_interval: int = 10
    threads: Optional[int] = None
    eval: dict = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, path) -> "Config":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"configuration file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"configuration {path} is not valid JSON: {err}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known - {"comment"})
        if unknown:
            raise UserError(f"configuration {path}: unknown keys {unknown}; known: {sorted(known)}")
        raw.pop("comment", None)
        return cls(**raw)

    def all_variants(self) -> Dict[str, Variant]:
        """The table's rows and the configuration's own ``"variants"``."""
        variants = dict(VARIANTS)
        for name, spec in self.variants.items():
            if "arch" not in spec:
                raise UserError(f"variant {name!r} needs an 'arch'")
            variants[name] = Variant(
                name, spec["arch"], tuple(spec.get("args", ())), bool(spec.get("nowarmup", False)),
                label=name, description=spec.get("description", ""),
            )
        return variants


@dataclass
class Run:
    arch: str  # the variant's name
    depth: Optional[int]
    seed: int
    variant: Variant
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.arch}-d{self.depth if self.depth is not None else 'default'}-s{self.seed}"

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"


# ----------------------------------------------------------------------------
# validation of the input


def check_data_bin(data) -> Path:
    if data is None:
        raise UserError(
            "no data-bin given: pass --data DATA_BIN (e.g. the output of "
            "rskip-prepare bundled) or set \"data\" in the configuration"
        )
    path = Path(data)
    if not path.is_dir():
        raise UserError(
            f"data-bin not found: {path} is not a directory (prepare one with "
            "rskip-prepare bundled or fairseq-preprocess)"
        )
    dicts = sorted(path.glob("dict.*.txt"))
    if len(dicts) < 2:
        raise UserError(
            f"{path} is not a fairseq translation data-bin: it has no dict.<src>.txt and "
            "dict.<tgt>.txt"
        )
    for split in ("train", "valid"):
        if not list(path.glob(f"{split}.*.idx")):
            raise UserError(f"{path} has no binarised '{split}' split ({split}.*.idx)")
    return path


def registered_archs() -> set:
    """fairseq's architecture names, after registering the plugin's."""
    import fairseq_rskip  # noqa: F401
    from fairseq.models import ARCH_MODEL_REGISTRY

    return set(ARCH_MODEL_REGISTRY)


def resolve_archs(config: Config, archs: Sequence[str]) -> Dict[str, Variant]:
    """Map each requested name to its :class:`Variant`, refusing unknown names."""
    variants = config.all_variants()
    registry = registered_archs()
    chosen = {}
    for name in archs:
        if name in variants:
            chosen[name] = variants[name]
        elif name in registry:
            chosen[name] = Variant(name, name, label=name)
        else:
            raise UserError(
                f"unknown architecture {name!r}: use one of {', '.join(sorted(variants))} "
                "or a registered fairseq architecture name (e.g. transformer_rskip_tiny)"
            )
    for name, variant in chosen.items():
        arch = variant.fairseq_arch(config.size)
        if arch not in registry:
            raise UserError(
                f"architecture {name!r} resolves to {arch!r} with size {config.size!r}, "
                "which fairseq does not know"
            )
    if not chosen:
        raise UserError("no architectures given")
    return chosen


# ----------------------------------------------------------------------------
# one run


def train_command(config: Config, run: Run, data: Path, extra_args: Sequence[str]) -> List[str]:
    v = run.variant
    cmd = [fairseq_executable("fairseq-train"), str(data), "--user-dir", str(PLUGIN_DIR)]
    cmd += ["--arch", v.fairseq_arch(config.size)]
    if run.depth is not None:
        cmd += ["--encoder-layers", str(run.depth), "--decoder-layers", str(run.depth)]
    if v.nowarmup:
        lr = config.nowarmup_lr if config.nowarmup_lr is not None else config.lr
        cmd += ["--lr", str(lr), "--lr-scheduler", "inverse_sqrt_nowarmup",
                "--decay-timescale", str(config.warmup_updates)]
    else:
        cmd += ["--lr", str(config.lr), "--lr-scheduler", "inverse_sqrt",
                "--warmup-updates", str(config.warmup_updates)]
    cmd += list(config.train_args) + list(v.flags) + list(extra_args)
    cmd += ["--seed", str(run.seed), "--save-dir", str(run.checkpoint_dir),
            "--log-format", "json", "--log-interval", str(config.log_interval),
            "--no-progress-bar"]
    return cmd


def run_subprocess(cmd: Sequence[str], log_path: Path, threads: Optional[int] = None,
                   watch: Optional[Callable[[], None]] = None) -> dict:
    """Run ``cmd`` with its output appended to ``log_path``, calling ``watch()`` every 0.5 s
    while it runs; returns its exit status, wall time and peak RSS."""
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(threads))
        peak_kib = 0
        try:
            while proc.poll() is None:
                peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
                if watch is not None:
                    watch()
                time.sleep(0.5)
            if watch is not None:
                watch()
        except BaseException:
            # interrupted (Ctrl-C): stop fairseq-train, keep its checkpoints
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
            raise
    return {
        "returncode": proc.returncode,
        "wall_s": round(time.time() - start, 2),
        "max_rss_mib": round(peak_kib / 1024, 1),
    }


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of a running process, in KiB; 0 if gone.

    Not ``ru_maxrss`` from ``wait4``: on Linux that also counts the RSS the
    child inherited from this (forking) process.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


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
    """:func:`run_subprocess` of a fairseq-train command with a live bar of its progress."""
    progress = TrainProgress.for_command(cmd)
    follower = LogFollower(log_path)
    with progress_bar(progress.total, desc=desc, unit="upd") as bar:
        def watch():
            for line in follower.new_lines():
                progress.feed(line)
            show_train_progress(bar, progress)

        return run_subprocess(cmd, log_path, threads, watch)


class Evaluator:
    """Runs an evaluation command (``rskip-evaluate`` by default) on a run's checkpoint
    directory and reads the JSON record it writes there (``eval_<subset>.json``)."""

    def __init__(self, data: Path, command: Sequence[str] = DEFAULT_EVALUATE, avg_last: int = 1,
                 beam: int = 5, lenpen: float = 1.0, subset: str = "test", extra: Sequence[str] = (),
                 threads: Optional[int] = None):
        self.program, self.data = list(command), data
        self.avg_last, self.beam, self.lenpen, self.subset = avg_last, beam, lenpen, subset
        self.extra = list(extra)
        self.threads = threads
        exe = self.program[0] if self.program else ""
        if not (shutil.which(exe) or Path(exe).is_file()):
            raise UserError(
                f"evaluation command not found: {shlex.join(self.program)} (give "
                "--evaluate-command CMD, or --no-bleu to train and report losses only)"
            )

    def command(self, run: Run) -> List[str]:
        cmd = self.program + ["--data", str(self.data), "--checkpoint-dir", str(run.checkpoint_dir)]
        if self.avg_last:  # else rskip-evaluate takes checkpoint_best.pt
            cmd += ["--avg-last", str(self.avg_last)]
        return cmd + ["--beam", str(self.beam), "--lenpen", str(self.lenpen),
                      "--subset", self.subset, "--user-dir", str(PLUGIN_DIR)] + self.extra

    def __call__(self, run: Run) -> dict:
        log = run.run_dir / "eval.log"
        with progress_bar(desc=f"{run.key} evaluating", bar_format="{desc} {elapsed}") as bar:
            info = run_subprocess(self.command(run), log, self.threads, watch=bar.refresh)
        out = run.checkpoint_dir / f"eval_{self.subset}.json"
        if info["returncode"] != 0 or not out.is_file():
            raise RuntimeError(f"evaluation failed (exit {info['returncode']}); see {log}:\n{_tail(log)}")
        return json.loads(out.read_text(encoding="utf-8"))


def execute_run(config: Config, run: Run, data: Path, extra_args: Sequence[str],
                evaluator: Optional[Evaluator], echo=write) -> dict:
    """Train (or resume) one run, evaluate it, write and return its result record."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run.run_dir / "train.log"
    trained_marker = run.run_dir / "trained.json"
    cmd = train_command(config, run, data, extra_args)
    (run.run_dir / "command.txt").write_text(shlex.join(cmd) + "\n", encoding="utf-8")
    if not trained_marker.exists():
        resumed = (run.checkpoint_dir / "checkpoint_last.pt").exists()
        echo(f"[{run.key}] {'resuming' if resumed else 'training'}: {shlex.join(cmd)}")
        attempt = train_with_progress(cmd, log_path, run.key, threads=config.threads)
        attempt["resumed"] = resumed
        with open(run.run_dir / "attempts.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(attempt) + "\n")
    attempts = [json.loads(l) for l in
                (run.run_dir / "attempts.jsonl").read_text(encoding="utf-8").splitlines() if l]
    last = attempts[-1]
    text = log_path.read_text(encoding="utf-8", errors="replace")
    parsed = parse_train_log(text)
    record = {
        "arch": run.arch,
        "fairseq_arch": run.variant.fairseq_arch(config.size),
        "depth": run.depth,
        "seed": run.seed,
        "command": shlex.join(cmd),
        "wall_s": round(sum(a["wall_s"] for a in attempts), 2),
        "attempts": len(attempts),
        "peak_rss_mib": max(a["max_rss_mib"] for a in attempts),
        **{k: v for k, v in parsed.items() if k != "nonfinite_loss"},
        "updates_to_target": updates_to_target(parsed["valid_curve"], config.target_valid_loss),
        "target_valid_loss": config.target_valid_loss,
        "bleu": None,
        "sacrebleu": None,
        "sacrebleu_signature": None,
    }
    total = cuda_total_gb()
    record["peak_gpu_mem_gb"] = (
        round(total - parsed["min_gb_free"], 2) if total and parsed["min_gb_free"] is not None
        else None
    )
    tail = text[-20000:]
    diverged = parsed["nonfinite_loss"] or (
        last["returncode"] != 0 and any(m in tail for m in DIVERGENCE_MARKERS)
    )
    if diverged:
        record["status"] = "diverged"
        record["message"] = next(
            (l.strip() for l in reversed(tail.splitlines()) if any(m in l for m in DIVERGENCE_MARKERS)),
            "non-finite loss in the log",
        )
        echo(f"[{run.key}] DIVERGED after {record['num_updates']} updates: {record['message']}")
        write_json(run.result_path, record)
        return record
    if last["returncode"] != 0:
        record["status"] = "failed"
        record["message"] = f"fairseq-train exited with {last['returncode']}; see {log_path}"
        echo(f"[{run.key}] FAILED: {record['message']}\n{_tail(log_path)}")
        write_json(run.run_dir / "failed.json", record)  # not finished: retried next time
        return record
    write_json(trained_marker, {"num_updates": parsed["num_updates"]})
    if evaluator is not None:
        try:
            ev = evaluator(run)
        except RuntimeError as err:
            record["status"] = "failed"
            record["message"] = str(err)
            echo(f"[{run.key}] FAILED: {err}")
            write_json(run.run_dir / "failed.json", record)
            return record
        record["bleu"] = ev.get("bleu_tokenized")
        record["sacrebleu"] = ev.get("sacrebleu")
        record["sacrebleu_signature"] = ev.get("sacrebleu_signature")
        record["eval"] = ev
    record["status"] = "ok"
    echo(
        f"[{run.key}] done: best valid loss {fmt(record['best_valid_loss'], 3)}, "
        f"BLEU {fmt(record['bleu'], 2)}, {fmt(record['tokens_per_s'], 0)} tok/s, "
        f"peak RSS {record['peak_rss_mib']:.0f} MiB"
    )
    (run.run_dir / "failed.json").unlink(missing_ok=True)
    write_json(run.result_path, record)
    return record


# ----------------------------------------------------------------------------
# the whole comparison


def plan_runs(config: Config, variants: Dict[str, Variant], out: Path) -> List[Run]:
    runs = []
    for depth in config.depths:
        for seed in config.seeds:
            for name, variant in variants.items():
                r = Run(name, depth, seed, variant, out / "runs" / "")
                r.run_dir = out / "runs" / r.key
                runs.append(r)
    return runs


def reproduce(config: Config, out, data=None, archs=None, extra_args: Sequence[str] = (),
              no_bleu: bool = False, evaluate_command: Optional[Sequence[str]] = None,
              dry_run: bool = False, report_only: bool = False, echo=write) -> List[dict]:
    """Run (or resume) the comparison and write tables and plots; returns the summary rows."""
    data = check_data_bin(data if data is not None else config.data)
    variants = resolve_archs(config, archs if archs else config.archs)
    for depth in config.depths:
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise UserError(f"depths must be integers >= 1; got {depth!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluator = None
    if not no_bleu and not report_only and not dry_run:
        ev = dict(config.eval)
        evaluator = Evaluator(
            data, command=evaluate_command or DEFAULT_EVALUATE,
            avg_last=ev.get("avg_last", 0), beam=ev.get("beam", 5),
            lenpen=ev.get("lenpen", 1.0), subset=ev.get("subset", "test"),
            extra=ev.get("extra_args", ()), threads=config.threads,
        )
    runs = plan_runs(config, variants, out)
    records = []
    for i, run in enumerate(runs, 1):
        if run.result_path.exists():
            record = json.loads(run.result_path.read_text(encoding="utf-8"))
            echo(f"[{i}/{len(runs)}] {run.key}: finished earlier ({record['status']}), skipped")
            records.append(record)
            continue
        if dry_run:
            echo(f"[{i}/{len(runs)}] {run.key}: {shlex.join(train_command(config, run, data, extra_args))}")
            continue
        if report_only:
            failed = run.run_dir / "failed.json"
            if failed.exists():
                records.append(json.loads(failed.read_text(encoding="utf-8")))
            continue
        echo(f"[{i}/{len(runs)}] {run.key}")
        records.append(execute_run(config, run, data, extra_args, evaluator, echo))
    if dry_run:
        return []
    for record in records:  # the target may have changed since a run finished
        record["target_valid_loss"] = config.target_valid_loss
        record["updates_to_target"] = updates_to_target(record.get("valid_curve", []),
                                                        config.target_valid_loss)
    write_json(out / "config.json", config.__dict__)
    if records:
        plot_curves(out, records, list(variants))
    rows = write_tables(out, config, records, list(variants))
    echo(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'runs.csv'}")
    return rows

"""The comparison runner (``rskip-reproduce``): variants x depths x seeds through ``fairseq-train``.

Every run is a real ``fairseq-train`` subprocess (``--log-format json``,
``--user-dir`` this package's folder) followed, unless ``--no-bleu``, by
``rskip-evaluate`` on its checkpoint directory. Under ``--out`` the runner keeps

``runs/<arch>-d<depth>-s<seed>/``
    ``checkpoints/`` (fairseq's), ``train.log`` (fairseq's output, appended on
    every attempt), ``attempts.jsonl`` (exit status, wall time and peak
    memory of each attempt, and the signal that stopped it, if one did),
    ``run.json`` (the run's identity, below) and ``result.json``, written
    once the run is finished (trained and evaluated, or diverged). A run
    whose ``result.json`` exists is skipped; any other run is started again
    and fairseq resumes it from ``checkpoints/checkpoint_last.pt``. The
    evaluation keeps its translations here (``rskip-evaluate
    --translations-dir``).

and :mod:`fairseq_rskip.analysis.significance` compares each variant with
its reference row, :mod:`fairseq_rskip.analysis.report` writes the tables
and plots, and ``config.json`` the configuration the runs were made with.

A run's identity (:func:`run_identity`) is everything that determines it:
its fairseq-train arguments (without the program, the data-bin's path and
the two paths that only say where things are, ``--save-dir`` and
``--user-dir``), the data-bin's content (:func:`data_identity`), the CPU
threads and the evaluation settings. A folder that holds a run with another
identity is never reused: the runner refuses it, naming the settings that
differ, or with ``rerun_changed`` trains the run into
``runs/<arch>-d<depth>-s<seed>-<id>/`` beside it.

While a run trains or is evaluated its folder is locked
(:func:`fairseq_rskip.file_io.locked`): a second runner refuses it. SIGINT,
SIGTERM and SIGHUP stop the runner's children (fairseq-train runs in a
process session of its own), record the attempt as interrupted, and end the
runner with :class:`Interrupted`.

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

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from fairseq_rskip.analysis.report import divergence_point, fmt, plot_curves, write_tables
from fairseq_rskip.analysis.significance import against_reference_rows
from fairseq_rskip.analysis.trainlog import (
    DIVERGENCE_MARKERS,
    LogFollower,
    TrainProgress,
    parse_train_log,
    updates_to_target,
)
from fairseq_rskip.checkpoint_compat import check_checkpoint_file
from fairseq_rskip.errors import UserError
from fairseq_rskip.fairseq_tools import PLUGIN_DIR, child_env, fairseq_executable
from fairseq_rskip.file_io import locked, write_json
from fairseq_rskip.progress import progress_bar, write
from fairseq_rskip.scoring.paired import PairedSettings
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
    train_args: List[str] = field(default_factory=list)  # before the variant's flags
    variants: Dict[str, dict] = field(default_factory=dict)
    target_valid_loss: Optional[float] = None
    log_interval: int = 10
    threads: Optional[int] = None
    # evaluation settings (avg_last, beam, lenpen, subset, extra_args); None: no evaluation
    eval: Optional[dict] = field(default_factory=dict)
    # fairseq-train options after the variant's flags (rskip-reproduce ... -- OPTIONS)
    extra_args: List[str] = field(default_factory=list)
    description: str = ""
    # the paired tests against each variant's reference row (paired_bs_n, paired_ar_n, seed;
    # see fairseq_rskip.scoring.paired.PairedSettings)
    significance: dict = field(default_factory=dict)

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
                reference=spec.get("reference", "postln"),
            )
        return variants


@dataclass
class Run:
    arch: str  # the variant's name
    depth: Optional[int]
    seed: int
    variant: Variant
    run_dir: Path
    identity: Optional[dict] = None  # see run_identity

    @property
    def key(self) -> str:
        return f"{self.arch}-d{self.depth if self.depth is not None else 'default'}-s{self.seed}"

    @property
    def identity_path(self) -> Path:
        return self.run_dir / "run.json"

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


# fairseq-train options the runner sets on every command, and what to use instead
# (fairseq's parser takes no abbreviations: allow_abbrev=False)
RUNNER_OPTIONS = {
    "--seed": "--seeds (\"seeds\" in the configuration)",
    "--save-dir": "--out (each run saves into OUT/runs/RUN/checkpoints)",
    "--arch": "--archs and --size (\"archs\", \"size\" and \"variants\" in the configuration)",
    "-a": "--archs and --size (\"archs\", \"size\" and \"variants\" in the configuration)",
    "--user-dir": "no option: the runner gives this package's folder",
    "--lr": "\"lr\" and \"nowarmup_lr\" in the configuration",
    "--lr-scheduler": "a variant's \"nowarmup\" (inverse_sqrt warm-up, or inverse_sqrt_nowarmup)",
    "--warmup-updates": "\"warmup_updates\" in the configuration",
    "--decay-timescale": "\"warmup_updates\" in the configuration",
    "--encoder-layers": "--depths (\"depths\" in the configuration)",
    "--decoder-layers": "--depths (\"depths\" in the configuration)",
    "--log-format": "no option: the runner reads fairseq's JSON log",
    "--log-interval": "\"log_interval\" in the configuration",
}
LAYER_OPTIONS = ("--encoder-layers", "--decoder-layers")
# what a variant's own "args" may set: they come after the runner's in the command, so a
# variant may train with its own rate or schedule (the configuration records it)
VARIANT_MAY_SET = ("--lr", "--lr-scheduler", "--warmup-updates", "--decay-timescale")


def refuse_runner_options(args: Sequence[str], where: str, depths_set: bool,
                          allowed: Sequence[str] = ()) -> None:
    """Refuse the options of :data:`RUNNER_OPTIONS` in ``args`` (``where`` names them), but
    ``allowed`` ones and, without set depths, the layer counts."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name not in RUNNER_OPTIONS or name in allowed:
            continue
        if name in LAYER_OPTIONS and not depths_set:
            continue
        raise UserError(
            f"{where} set {name}, which the runner sets itself on every fairseq-train "
            f"command: use {RUNNER_OPTIONS[name]}"
        )


def check_train_options(config: Config, variants: Dict[str, Variant]) -> None:
    depths_set = any(d is not None for d in config.depths)
    refuse_runner_options(config.train_args, 'the configuration\'s "train_args"', depths_set)
    refuse_runner_options(config.extra_args, 'the options after -- ("extra_args")', depths_set)
    for name in config.variants:
        if name in variants:
            refuse_runner_options(variants[name].flags, f"variant {name!r}'s \"args\"", depths_set,
                                  allowed=VARIANT_MAY_SET)


# ----------------------------------------------------------------------------
# a run's identity


def data_identity(data: Path) -> dict:
    """What identifies a data-bin's content, cheaply: the SHA-256 and size of each
    dictionary, and the size of each binarised file (``*.idx``, ``*.bin``)."""
    identity = {}
    for path in sorted(data.iterdir()):
        if path.name.startswith("dict.") and path.suffix == ".txt":
            identity[path.name] = {"bytes": path.stat().st_size,
                                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        elif path.suffix in (".idx", ".bin"):
            identity[path.name] = {"bytes": path.stat().st_size}
    return identity


def evaluation_settings(config: Config) -> Optional[dict]:
    """The evaluation a finished run gets (None: none)."""
    if config.eval is None:
        return None
    ev = config.eval
    return {"avg_last": ev.get("avg_last", 0), "beam": ev.get("beam", 5),
            "lenpen": ev.get("lenpen", 1.0), "subset": ev.get("subset", "test"),
            "extra_args": list(ev.get("extra_args", ()))}


def run_identity(config: Config, run: Run, data_id: dict) -> dict:
    """Everything that determines a run; two runs with equal identities are the same run."""
    return {"fairseq_train": train_settings(config, run), "data_bin": data_id,
            "threads": config.threads, "evaluation": evaluation_settings(config)}


def identity_id(identity: dict) -> str:
    """A short hash of an identity: the suffix of a rerun's folder."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def _options(argv: Sequence[str]) -> Dict[str, List[str]]:
    """``{option: [its value on each occurrence]}`` of a command line ("" for a bare flag)."""
    options: Dict[str, List[str]] = {}
    name = None
    for arg in argv:
        if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
            name, _, value = arg.partition("=")
            options.setdefault(name, []).append(value)
        elif name is not None:
            options[name][-1] = (options[name][-1] + " " + arg).strip()
    return options


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def identity_differences(recorded: dict, current: dict) -> List[str]:
    """What differs between two identities, as ``setting: VALUE there, VALUE now``."""
    def show(values):
        if values is None:
            return "absent"
        return " then ".join(v if v else "(set)" for v in values)

    if "unknown" in recorded:  # a folder of an earlier runner that says too little
        return [recorded["unknown"]]
    diffs = []
    then, now = _options(recorded["fairseq_train"]), _options(current["fairseq_train"])
    for name in dict.fromkeys([*then, *now]):
        if then.get(name) != now.get(name):
            diffs.append(f"{name}: {show(then.get(name))} there, {show(now.get(name))} now")
    if not diffs and recorded["fairseq_train"] != current["fairseq_train"]:
        diffs.append("fairseq-train options: the same, in another order")
    old_data, new_data = recorded.get("data_bin") or {}, current.get("data_bin") or {}
    if "path" in old_data:  # adopted from a runner that did not record the data-bin's content
        diffs.append(f"data-bin: {old_data['path']} there, another folder now")
    else:
        changed = [name for name in sorted(set(old_data) | set(new_data))
                   if old_data.get(name) != new_data.get(name)]
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            diffs.append(f"data-bin: {', '.join(changed[:3])}{more} differ")
    for key in ("threads", "evaluation"):
        if recorded.get(key) != current.get(key):
            then, now = (json.dumps(v) if v is not None else "none"
                         for v in (recorded.get(key), current.get(key)))
            diffs.append(f"{key}: {then} there, {now} now")
    return diffs


def _settings_of_command(cmd: Sequence[str]) -> tuple:
    """``(data-bin path, fairseq-train arguments)`` of a recorded command line (program,
    data-bin, --save-dir and --user-dir taken out), as :func:`train_settings` gives them."""
    args, kept = list(cmd[2:]), []
    i = 0
    while i < len(args):
        if args[i] in ("--save-dir", "--user-dir"):
            i += 2
            continue
        kept.append(args[i])
        i += 1
    return (cmd[1] if len(cmd) > 1 else None), kept


def recorded_identity(folder: Path, current: dict, data: Path) -> Optional[dict]:
    """The identity of the run ``folder`` holds: its ``run.json``; for a folder an earlier
    version of the runner made, the commands in its ``train.log`` (adopted as ``current``
    when they are the same command on the same data-bin); None when it holds no run."""
    record = folder / "run.json"
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))["identity"]
    log = folder / "train.log"
    commands = []
    if log.is_file():
        commands = [shlex.split(line.split(" $ ", 1)[1])
                    for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                    if line.startswith("### ") and " $ " in line]
    if not commands:
        if (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir()):
            return {"unknown": "it holds checkpoints but no record of the command that wrote them"}
        return None
    data_path, settings = _settings_of_command(commands[-1])
    if any(_settings_of_command(c)[1] != settings for c in commands):
        return {"unknown": "its train.log holds several different fairseq-train commands"}
    if data_path is not None and Path(data_path).resolve() == data.resolve():
        return {**current, "fairseq_train": settings}
    return {**current, "fairseq_train": settings, "data_bin": {"path": data_path}}


# ----------------------------------------------------------------------------
# one run


def train_settings(config: Config, run: Run) -> List[str]:
    """The run's fairseq-train arguments but the data-bin and the two paths that only say
    where things are (``--user-dir``, ``--save-dir``): what :func:`run_identity` records."""
    v = run.variant
    args = ["--arch", v.fairseq_arch(config.size)]
    if run.depth is not None:
        args += ["--encoder-layers", str(run.depth), "--decoder-layers", str(run.depth)]
    if v.nowarmup:
        lr = config.nowarmup_lr if config.nowarmup_lr is not None else config.lr
        args += ["--lr", str(lr), "--lr-scheduler", "inverse_sqrt_nowarmup",
                 "--decay-timescale", str(config.warmup_updates)]
    else:
        args += ["--lr", str(config.lr), "--lr-scheduler", "inverse_sqrt",
                 "--warmup-updates", str(config.warmup_updates)]
    args += list(config.train_args) + list(v.flags) + list(config.extra_args)
    args += ["--seed", str(run.seed), "--log-format", "json",
             "--log-interval", str(config.log_interval), "--no-progress-bar"]
    return args


def train_command(config: Config, run: Run, data: Path,
                  program: Optional[Sequence[str]] = None) -> List[str]:
    """The run's fairseq-train command (``program``: another command in its place)."""
    program = list(program) if program else [fairseq_executable("fairseq-train")]
    return [*program, str(data), "--user-dir", str(PLUGIN_DIR), *train_settings(config, run),
            "--save-dir", str(run.checkpoint_dir)]


class Interrupted(KeyboardInterrupt):
    """The runner was told to stop by ``signum`` (SIGINT, SIGTERM or SIGHUP); ``attempt``:
    the record of the child it stopped, if one ran."""

    def __init__(self, signum: int, attempt: Optional[dict] = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.attempt = signum, attempt

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals(signums=STOP_SIGNALS):
    """While the block runs, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (once:
    later ones are ignored while the runner stops its children). A signal the runner was
    started ignoring stays ignored (``nohup`` ignores SIGHUP, a shell's ``&`` SIGINT). Only
    in the main thread, where Python delivers signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []

    def handler(signum, frame):
        if not received:
            received.append(signum)
            raise Interrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in signums
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to the process group of ``proc`` (a session leader), SIGKILL after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_subprocess(cmd: Sequence[str], log_path: Path, threads: Optional[int] = None,
                   watch: Optional[Callable[[], None]] = None) -> dict:
    """Run ``cmd`` with its output appended to ``log_path``, calling ``watch()`` every 0.5 s
    while it runs; returns its exit status, wall time and peak RSS.

    The child runs in a process session of its own (a terminal's Ctrl-C reaches only the
    runner); if the runner is interrupted, it stops the child's process group, keeping
    its checkpoints, and raises :class:`Interrupted` with the attempt's record."""
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(threads))
        peak_kib = 0

        def attempt() -> dict:
            return {"returncode": proc.returncode, "started": round(start, 3),
                    "wall_s": round(time.time() - start, 2), "max_rss_mib": round(peak_kib / 1024, 1)}

        try:
            while proc.poll() is None:
                peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
                if watch is not None:
                    watch()
                time.sleep(0.5)
            if watch is not None:
                watch()
        except KeyboardInterrupt as err:
            stop_process_group(proc)
            record = {**attempt(), "interrupted": signal.Signals(getattr(err, "signum", signal.SIGINT)).name}
            log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} stopped by the runner "
                      f"({record['interrupted']})\n")
            raise Interrupted(getattr(err, "signum", signal.SIGINT), record) from None
        except BaseException:
            stop_process_group(proc)
            raise
    return attempt()


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
                      "--subset", self.subset, "--user-dir", str(PLUGIN_DIR),
                      "--translations-dir", str(run.run_dir)] + self.extra

    def __call__(self, run: Run) -> dict:
        log = run.run_dir / "eval.log"
        with progress_bar(desc=f"{run.key} evaluating", bar_format="{desc} {elapsed}") as bar:
            info = run_subprocess(self.command(run), log, self.threads, watch=bar.refresh)
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
        attempt["resumed"] = resumed
        _append_attempt(run, attempt)
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
        "run": run.run_dir.name,
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
        "chrf": None,
        "chrf_signature": None,
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
        record["diverged_at_update"] = crash_update(run.checkpoint_dir, since=last.get("started", 0))
        echo(f"[{run.key}] DIVERGED {divergence_point(record)}: {record['message']}")
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
        record["chrf"] = ev.get("chrf")
        record["chrf_signature"] = ev.get("chrf_signature")
        record["eval"] = ev
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


# ----------------------------------------------------------------------------
# the whole comparison


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
            extra=ev["extra_args"], threads=config.threads,
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

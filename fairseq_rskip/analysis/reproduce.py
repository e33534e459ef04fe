"""Reproduction runner: architectures x depths x seeds through ``fairseq-train``.

Every run is a real ``fairseq-train`` subprocess (``--log-format json``)
followed, unless ``--no-bleu``, by ``scripts/evaluate.sh`` on its checkpoint
directory. The runner then writes, under ``--out``:

``runs/<arch>-d<depth>-s<seed>/``
    ``checkpoints/`` (fairseq's), ``train.log`` (fairseq's output, appended on
    every attempt), ``attempts.jsonl`` (exit status, wall time and peak
    memory of each attempt) and ``result.json``, written once the run is
    finished (trained and evaluated, or diverged). A run whose
    ``result.json`` exists is skipped; any other run is started again and
    fairseq resumes it from ``checkpoints/checkpoint_last.pt``.
``results.md``, ``results.csv``
    one row per architecture and depth: BLEU mean +- std over seeds, best
    validation loss, updates to reach the target validation loss, target
    tokens per second, peak memory, and how many seeds diverged.
``runs.csv``
    one row per run, diverged and failed runs included.
``valid_loss_d<depth>.png``
    validation loss against updates, one colour per architecture, one line
    per seed (a cross marks where a diverged run stopped).

Memory: on CPU the peak resident set size (``VmHWM`` of
``/proc/PID/status``, polled every 0.5 s) of the ``fairseq-train`` process, which includes the Python interpreter,
fairseq, the data and the model (so it overstates what the model itself
needs); on GPU also ``torch.cuda.max_memory_allocated`` as fairseq reports it
(``gb_free`` is the device total minus that peak).

Architectures are names from :data:`VARIANTS` (``postln``, ``preln``: stock
fairseq ``transformer``; ``rskip``, ``adanorm``, ``prenorm_nowarmup``,
``deepnorm``, ``admin``: this plugin), names a configuration file defines under ``"variants"``, or any
registered fairseq architecture name.
"""

import csv
import json
import math
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PLUGIN_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PLUGIN_DIR.parent
DEFAULT_EVALUATE = REPO_ROOT / "scripts" / "evaluate.sh"


class ReproduceError(Exception):
    """A problem with the runner's input, reported without a traceback."""


@dataclass(frozen=True)
class Variant:
    """One architecture of the comparison.

    ``arch`` may contain ``{size}``, replaced by the configuration's size
    suffix (``_tiny``, ``_iwslt_de_en``, ...). ``nowarmup`` runs use
    ``--lr-scheduler inverse_sqrt_nowarmup`` with ``--decay-timescale`` equal
    to the configuration's ``warmup_updates``.
    """

    arch: str
    args: Sequence[str] = ()
    nowarmup: bool = False
    description: str = ""


VARIANTS: Dict[str, Variant] = {
    "postln": Variant("transformer{size}", (), False, "fairseq transformer, Post-LN"),
    "preln": Variant(
        "transformer{size}",
        ("--encoder-normalize-before", "--decoder-normalize-before"),
        False,
        "fairseq transformer, Pre-LN",
    ),
    "rskip": Variant("transformer_rskip{size}", (), False, "rSkip+LN, 2 recursions"),
    "adanorm": Variant("transformer_adanorm{size}", (), False, "AdaNorm (Post-norm)"),
    "prenorm_nowarmup": Variant(
        "transformer_prenorm_nowarmup{size}", (), True, "Pre-LN, no warm-up"
    ),
    "deepnorm": Variant("transformer_deepnorm{size}", (), False, "DeepNorm (Post-LN, alpha, beta)"),
    "admin": Variant("transformer_admin{size}", (), False, "Admin (Post-LN, profiled omega)"),
}
DEFAULT_ARCHS = list(VARIANTS)


@dataclass
class Config:
    """A comparison: see ``examples/translation/configs/*.json``."""

    name: str = "comparison"
    data: Optional[str] = None
    size: str = "tiny"
    archs: List[str] = field(default_factory=lambda: list(DEFAULT_ARCHS))
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
            raise ReproduceError(f"configuration file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ReproduceError(f"configuration {path} is not valid JSON: {err}") from None
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known - {"comment"})
        if unknown:
            raise ReproduceError(
                f"configuration {path}: unknown keys {unknown}; known: {sorted(known)}"
            )
        raw.pop("comment", None)
        return cls(**raw)

    def size_suffix(self) -> str:
        size = self.size or ""
        if size in ("", "base"):
            return ""
        return size if size.startswith("_") else "_" + size

    def all_variants(self) -> Dict[str, Variant]:
        variants = dict(VARIANTS)
        for name, spec in self.variants.items():
            if "arch" not in spec:
                raise ReproduceError(f"variant {name!r} needs an 'arch'")
            variants[name] = Variant(
                spec["arch"],
                tuple(spec.get("args", ())),
                bool(spec.get("nowarmup", False)),
                spec.get("description", ""),
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
        raise ReproduceError(
            "no data-bin given: pass --data DATA_BIN (e.g. the output of "
            "bash scripts/prepare-bundled.sh) or set \"data\" in the configuration"
        )
    path = Path(data)
    if not path.is_dir():
        raise ReproduceError(
            f"data-bin not found: {path} is not a directory (prepare one with "
            "bash scripts/prepare-bundled.sh or fairseq-preprocess)"
        )
    dicts = sorted(path.glob("dict.*.txt"))
    if len(dicts) < 2:
        raise ReproduceError(
            f"{path} is not a fairseq translation data-bin: it has no dict.<src>.txt and "
            "dict.<tgt>.txt"
        )
    for split in ("train", "valid"):
        if not list(path.glob(f"{split}.*.idx")):
            raise ReproduceError(f"{path} has no binarised '{split}' split ({split}.*.idx)")
    return path


def registered_archs() -> set:
    """fairseq's architecture names, after registering the plugin's."""
    import fairseq_rskip  # noqa: F401
    from fairseq.models import ARCH_MODEL_REGISTRY

    return set(ARCH_MODEL_REGISTRY)


def resolve_archs(config: Config, archs: Sequence[str]) -> Dict[str, Variant]:
    """Map each requested name to its :class:`Variant`, refusing unknown names."""
    variants = config.all_variants()
    suffix = config.size_suffix()
    registry = None
    chosen = {}
    for name in archs:
        if name in variants:
            chosen[name] = variants[name]
            continue
        if registry is None:
            registry = registered_archs()
        if name in registry:
            chosen[name] = Variant(name)
            continue
        raise ReproduceError(
            f"unknown architecture {name!r}: use one of {', '.join(sorted(variants))} "
            "or a registered fairseq architecture name (e.g. transformer_rskip_tiny)"
        )
    if registry is None:
        registry = registered_archs()
    for name, variant in chosen.items():
        arch = variant.arch.format(size=suffix)
        if arch not in registry:
            raise ReproduceError(
                f"architecture {name!r} resolves to {arch!r} with size {config.size!r}, "
                "which fairseq does not know"
            )
    if not chosen:
        raise ReproduceError("no architectures given")
    return chosen


# ----------------------------------------------------------------------------
# one run


def fairseq_train_exe() -> str:
    exe = Path(sys.executable).with_name("fairseq-train")
    return str(exe) if exe.exists() else "fairseq-train"


def train_command(config: Config, run: Run, data: Path, extra_args: Sequence[str]) -> List[str]:
    v = run.variant
    cmd = [fairseq_train_exe(), str(data), "--user-dir", str(PLUGIN_DIR)]
    cmd += ["--arch", v.arch.format(size=config.size_suffix())]
    if run.depth is not None:
        cmd += ["--encoder-layers", str(run.depth), "--decoder-layers", str(run.depth)]
    if v.nowarmup:
        lr = config.nowarmup_lr if config.nowarmup_lr is not None else config.lr
        cmd += ["--lr", str(lr), "--lr-scheduler", "inverse_sqrt_nowarmup",
                "--decay-timescale", str(config.warmup_updates)]
    else:
        cmd += ["--lr", str(config.lr), "--lr-scheduler", "inverse_sqrt",
                "--warmup-updates", str(config.warmup_updates)]
    cmd += list(config.train_args) + list(v.args) + list(extra_args)
    cmd += ["--seed", str(run.seed), "--save-dir", str(run.checkpoint_dir),
            "--log-format", "json", "--log-interval", str(config.log_interval),
            "--no-progress-bar"]
    return cmd


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def parse_train_log(text: str) -> dict:
    """Read fairseq's JSON log lines: validation curve, throughput, memory, size."""
    valid: Dict[int, float] = {}
    train_inner = []
    train_epoch = []
    gb_free = []
    params = None
    nonfinite = False
    for line in text.splitlines():
        if "num. model params:" in line or "num. shared model params:" in line:
            try:
                params = int(line.split("params:")[1].split()[0].replace(",", ""))
            except (IndexError, ValueError):
                pass
            continue
        start = line.find("{")
        if start < 0 or " | " not in line:
            continue
        tag = line[:start].rstrip(" |").rsplit("|", 1)[-1].strip()
        if tag not in ("valid", "train_inner", "train"):
            continue
        try:
            entry = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if tag == "valid" and "valid_loss" in entry:
            loss = _to_float(entry["valid_loss"])
            valid[int(float(entry.get("valid_num_updates", 0)))] = loss
            nonfinite |= not math.isfinite(loss)
        elif tag == "train_inner":
            loss = _to_float(entry.get("loss"))
            nonfinite |= not math.isfinite(loss)
            train_inner.append(entry)
            if "gb_free" in entry:
                gb_free.append(_to_float(entry["gb_free"]))
        elif tag == "train":
            train_epoch.append(entry)
            nonfinite |= not math.isfinite(_to_float(entry.get("train_loss")))
    # throughput: median of the logged intervals, the first (warm-up) left out
    wps = [_to_float(e.get("wps")) for e in train_inner[1:]]
    wps = [w for w in wps if math.isfinite(w) and w > 0]
    if not wps:
        wps = [_to_float(e.get("train_wps")) for e in train_epoch]
        wps = [w for w in wps if math.isfinite(w) and w > 0]
    updates = 0
    for e in train_inner + train_epoch:
        updates = max(updates, int(_to_float(e.get("num_updates", e.get("train_num_updates", 0))) or 0))
    curve = sorted(valid.items())
    return {
        "valid_curve": [[u, l] for u, l in curve],
        "best_valid_loss": min((l for _, l in curve if math.isfinite(l)), default=None),
        "tokens_per_s": statistics.median(wps) if wps else None,
        "num_updates": max([updates] + [u for u, _ in curve]),
        "min_gb_free": min(gb_free) if gb_free else None,
        "params": params,
        "nonfinite_loss": nonfinite,
    }


def updates_to_target(curve, target: Optional[float]) -> Optional[int]:
    if target is None:
        return None
    for updates, loss in curve:
        if math.isfinite(loss) and loss <= target:
            return int(updates)
    return None


DIVERGENCE_MARKERS = ("FloatingPointError", "Minimum loss scale reached", "gradients are Nan/Inf")


def _run_subprocess(cmd: Sequence[str], log_path: Path, cwd: Optional[Path] = None,
                    threads: Optional[int] = None) -> dict:
    """Run ``cmd`` with output appended to ``log_path``; exit status, wall time, max RSS."""
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n### {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
        log.flush()
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True, env=env)
        peak_kib = 0
        try:
            while proc.poll() is None:
                peak_kib = max(peak_kib, _vm_hwm_kib(proc.pid))
                time.sleep(0.5)
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


class Evaluator:
    """Runs ``scripts/evaluate.sh`` on a checkpoint directory and reads its JSON."""

    def __init__(self, script: Path, data: Path, avg_last: int = 1, beam: int = 5,
                 lenpen: float = 1.0, subset: str = "test", extra: Sequence[str] = (),
                 threads: Optional[int] = None):
        self.script, self.data = Path(script), data
        self.avg_last, self.beam, self.lenpen, self.subset = avg_last, beam, lenpen, subset
        self.extra = list(extra)
        self.threads = threads
        if not self.script.is_file():
            raise ReproduceError(
                f"evaluation script not found: {self.script} (give --evaluate-script PATH, "
                "or --no-bleu to train and report losses only)"
            )

    def command(self, run: Run) -> List[str]:
        cmd = ["bash", str(self.script), "--data", str(self.data),
               "--checkpoint-dir", str(run.checkpoint_dir)]
        if self.avg_last:  # else evaluate.sh takes checkpoint_best.pt
            cmd += ["--avg-last", str(self.avg_last)]
        return cmd + ["--beam", str(self.beam), "--lenpen", str(self.lenpen),
                      "--subset", self.subset, "--user-dir", str(PLUGIN_DIR)] + self.extra

    def __call__(self, run: Run) -> dict:
        log = run.run_dir / "eval.log"
        info = _run_subprocess(self.command(run), log, cwd=REPO_ROOT, threads=self.threads)
        out = run.checkpoint_dir / f"eval_{self.subset}.json"
        if info["returncode"] != 0 or not out.is_file():
            raise RuntimeError(
                f"evaluation failed (exit {info['returncode']}); see {log}:\n{_tail(log)}"
            )
        return json.loads(out.read_text(encoding="utf-8"))


def execute_run(config: Config, run: Run, data: Path, extra_args: Sequence[str],
                evaluator: Optional[Evaluator], echo=print) -> dict:
    """Train (or resume) one run, evaluate it, write and return its result record."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run.run_dir / "train.log"
    trained_marker = run.run_dir / "trained.json"
    cmd = train_command(config, run, data, extra_args)
    (run.run_dir / "command.txt").write_text(shlex.join(cmd) + "\n", encoding="utf-8")
    if not trained_marker.exists():
        resumed = (run.checkpoint_dir / "checkpoint_last.pt").exists()
        echo(f"[{run.key}] {'resuming' if resumed else 'training'}: {shlex.join(cmd)}")
        attempt = _run_subprocess(cmd, log_path, cwd=REPO_ROOT, threads=config.threads)
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
        "fairseq_arch": run.variant.arch.format(size=config.size_suffix()),
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
        _write_json(run.result_path, record)
        return record
    if last["returncode"] != 0:
        record["status"] = "failed"
        record["message"] = f"fairseq-train exited with {last['returncode']}; see {log_path}"
        echo(f"[{run.key}] FAILED: {record['message']}\n{_tail(log_path)}")
        _write_json(run.run_dir / "failed.json", record)  # not finished: retried next time
        return record
    _write_json(trained_marker, {"num_updates": parsed["num_updates"]})
    if evaluator is not None:
        try:
            ev = evaluator(run)
        except RuntimeError as err:
            record["status"] = "failed"
            record["message"] = str(err)
            echo(f"[{run.key}] FAILED: {err}")
            _write_json(run.run_dir / "failed.json", record)
            return record
        record["bleu"] = ev.get("bleu_tokenized")
        record["sacrebleu"] = ev.get("sacrebleu")
        record["sacrebleu_signature"] = ev.get("sacrebleu_signature")
        record["eval"] = ev
    record["status"] = "ok"
    echo(
        f"[{run.key}] done: best valid loss {_fmt(record['best_valid_loss'], 3)}, "
        f"BLEU {_fmt(record['bleu'], 2)}, {_fmt(record['tokens_per_s'], 0)} tok/s, "
        f"peak RSS {record['peak_rss_mib']:.0f} MiB"
    )
    (run.run_dir / "failed.json").unlink(missing_ok=True)
    _write_json(run.result_path, record)
    return record


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


# ----------------------------------------------------------------------------
# tables and plots


def _fmt(value, digits=2) -> str:
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
        rows.append({
            "arch": arch,
            "fairseq_arch": rs[0].get("fairseq_arch"),
            "depth": depth if depth is not None else "default",
            "seeds": len(rs),
            "status": ", ".join(status),
            "bleu": _mean_std(bleus, 2),
            "sacrebleu": _mean_std(sacre, 2),
            "best_valid_loss": _mean_std([r["best_valid_loss"] for r in ok], 3),
            "updates_to_target": (
                f"{statistics.mean(reached):.0f} ({len(reached)}/{len(ok)})" if reached
                else f"not reached (0/{len(ok)})" if ok and ok[0].get("target_valid_loss") is not None
                else "n/a"
            ),
            "tokens_per_s": _mean_std([r["tokens_per_s"] for r in ok], 0),
            "peak_rss_mib": _fmt(max((r["peak_rss_mib"] for r in ok), default=None), 0),
            "peak_gpu_mem_gb": _fmt(max(gpu), 2) if gpu else "n/a",
            "params": rs[0].get("params") or "n/a",
            "bleu_mean": statistics.mean(bleus) if bleus else None,
        })
    return rows


SUMMARY_COLUMNS = [
    ("arch", "architecture"), ("depth", "depth"), ("seeds", "seeds"), ("status", "status"),
    ("bleu", "BLEU (tok)"), ("sacrebleu", "sacreBLEU"), ("best_valid_loss", "best valid loss"),
    ("updates_to_target", "updates to target"), ("tokens_per_s", "target tok/s"),
    ("peak_rss_mib", "peak RSS MiB"), ("peak_gpu_mem_gb", "peak GPU GB"), ("params", "params"),
    ("fairseq_arch", "fairseq --arch"),
]
RUN_COLUMNS = [
    "arch", "depth", "seed", "status", "bleu", "sacrebleu", "best_valid_loss",
    "updates_to_target", "tokens_per_s", "peak_rss_mib", "peak_gpu_mem_gb", "num_updates",
    "wall_s", "attempts", "params", "message", "fairseq_arch",
]


def write_tables(out: Path, config: Config, records: List[dict], arch_order) -> List[dict]:
    rows = summarise(records, arch_order)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([key for key, _ in SUMMARY_COLUMNS])
        for row in rows:
            w.writerow([row[key] for key, _ in SUMMARY_COLUMNS])
    with open(out / "runs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, RUN_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(records, key=lambda r: (r["depth"] or 0, r["arch"], r["seed"])):
            w.writerow({k: r.get(k) for k in RUN_COLUMNS})
    md = [f"# {config.name}", ""]
    if config.description:
        md += [config.description, ""]
    target = config.target_valid_loss
    md += [
        "BLEU: mean ± sample standard deviation over the seeds that finished "
        "(`bleu_tokenized` of scripts/evaluate.sh; n/a with --no-bleu). "
        f"Updates to target: first validation with loss <= {target} "
        "(mean over the seeds that reached it). Target tok/s: fairseq's `wps` "
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
    md += ["", "## Runs", "", "| " + " | ".join(RUN_COLUMNS[:12]) + " |",
           "|" + "---|" * 12]
    for r in sorted(records, key=lambda r: (r["depth"] or 0, r["arch"], r["seed"])):
        cells = []
        for k in RUN_COLUMNS[:12]:
            v = r.get(k)
            cells.append(_fmt(v, 3) if isinstance(v, float) else ("" if v is None else str(v)))
        md.append("| " + " | ".join(cells) + " |")
    problems = [r for r in records if r["status"] != "ok"]
    if problems:
        md += ["", "## Diverged or failed runs", ""]
        md += [f"- {r['arch']} depth {r['depth']} seed {r['seed']}: **{r['status']}** "
               f"after {r.get('num_updates')} updates: {r.get('message', '')}" for r in problems]
    plots = sorted(p.name for p in out.glob("valid_loss_*.png"))
    if plots:
        md += ["", "## Validation loss", ""] + [f"![{p}]({p})" for p in plots]
    (out / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return rows


def plot_curves(out: Path, records: List[dict], arch_order) -> List[Path]:
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        path = out / f"valid_loss_d{depth if depth is not None else 'default'}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


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
              no_bleu: bool = False, evaluate_script=None, dry_run: bool = False,
              report_only: bool = False, echo=print) -> List[dict]:
    """Run (or resume) the comparison and write tables and plots; returns the summary rows."""
    data = check_data_bin(data if data is not None else config.data)
    variants = resolve_archs(config, archs if archs else config.archs)
    for depth in config.depths:
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ReproduceError(f"depths must be integers >= 1; got {depth!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluator = None
    if not no_bleu and not report_only and not dry_run:
        ev = dict(config.eval)
        evaluator = Evaluator(
            Path(evaluate_script) if evaluate_script else DEFAULT_EVALUATE, data,
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
    (out / "config.json").write_text(json.dumps(config.__dict__, indent=1) + "\n", encoding="utf-8")
    if records:
        plot_curves(out, records, list(variants))
    rows = write_tables(out, config, records, list(variants))
    echo(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'runs.csv'}")
    return rows


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="scripts/reproduce.py",
        allow_abbrev=False,
        description="Compare architectures over depths and seeds with fairseq-train and "
        "scripts/evaluate.sh; resumable (finished runs are skipped). Unknown "
        "arguments after -- go to every fairseq-train.",
    )
    p.add_argument("--config", help="JSON configuration (examples/translation/configs/)")
    p.add_argument("--data", help="fairseq data-bin (overrides the configuration's)")
    p.add_argument("--out", required=True, help="output directory (runs, tables, plots)")
    p.add_argument("--archs", nargs="+", help=f"architectures (default: the configuration's; "
                   f"built in: {', '.join(VARIANTS)})")
    p.add_argument("--depths", nargs="+", type=int, help="encoder and decoder layers")
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--size", help="size suffix of the architectures: tiny, iwslt_de_en, base, ...")
    p.add_argument("--target-valid-loss", type=float)
    p.add_argument("--threads", type=int,
                   help="OMP_NUM_THREADS of fairseq-train and evaluate.sh (default: the "
                   "configuration's, else torch's default)")
    p.add_argument("--no-bleu", action="store_true",
                   help="skip scripts/evaluate.sh (BLEU columns read n/a)")
    p.add_argument("--evaluate-script", help=f"evaluation script (default {DEFAULT_EVALUATE})")
    p.add_argument("--dry-run", action="store_true", help="print the fairseq-train commands")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild tables and plots from finished runs; train nothing")
    args, extra = p.parse_known_args(argv)
    if "--" in extra:
        extra.remove("--")
    try:
        config = Config.load(args.config) if args.config else Config()
        if args.depths:
            config.depths = args.depths
        if args.seeds:
            config.seeds = args.seeds
        if args.size is not None:
            config.size = args.size
        if args.threads is not None:
            config.threads = args.threads
        if args.target_valid_loss is not None:
            config.target_valid_loss = args.target_valid_loss
        rows = reproduce(config, args.out, data=args.data, archs=args.archs, extra_args=extra,
                  no_bleu=args.no_bleu, evaluate_script=args.evaluate_script,
                  dry_run=args.dry_run, report_only=args.report_only)
    except ReproduceError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reproduce: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if any("failed" in row["status"] for row in rows):
        print("reproduce: some runs failed (see the tables); run again to retry them",
              file=sys.stderr)
        return 1
    return 0

"""A run's identity: everything that determines it (its fairseq-train arguments, the
data-bin's content, the CPU threads and the evaluation settings), and what differs
between the identity a folder records and the one asked for now."""

import hashlib
import json
import shlex
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fairseq_rskip.tools.runner.config import Config, evaluation_settings
from fairseq_rskip.tools.runner.runs import Run, train_settings


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

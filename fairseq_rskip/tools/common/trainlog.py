"""Reading fairseq-train's output (``--log-format json``): after a run, and live while it runs.

:func:`parse_train_log` gives what the runner records of a finished run
(validation curve, throughput, memory, size); :class:`TrainProgress` follows
a log as fairseq writes it and feeds the runner's progress bar: updates done,
of how many, and the latest training loss.
"""

import json
import math
import re
import statistics
from pathlib import Path
from typing import Dict, List, Optional, Sequence

DIVERGENCE_MARKERS = ("FloatingPointError", "Minimum loss scale reached", "gradients are Nan/Inf")


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def json_record(line: str):
    """``(tag, record)`` of a fairseq JSON log line (``... | train_inner | {...}``), else None."""
    start = line.find("{")
    if start < 0 or " | " not in line:
        return None
    tag = line[:start].rstrip(" |").rsplit("|", 1)[-1].strip()
    try:
        return tag, json.loads(line[start:])
    except json.JSONDecodeError:
        return None


def parse_train_log(text: str) -> dict:
    """Read fairseq's JSON log lines: validation curve, throughput, memory, size."""
    valid: Dict[int, float] = {}
    train_inner = []
    train_epoch = []
    gb_free = []
    params = None
    nonfinite = False
    last_finite = 0  # the last update logged before the first non-finite loss
    for line in text.splitlines():
        if "num. model params:" in line or "num. shared model params:" in line:
            try:
                params = int(line.split("params:")[1].split()[0].replace(",", ""))
            except (IndexError, ValueError):
                pass
            continue
        parsed = json_record(line)
        if parsed is None:
            continue
        tag, entry = parsed
        if tag == "valid" and "valid_loss" in entry:
            loss = _to_float(entry["valid_loss"])
            update = int(float(entry.get("valid_num_updates", 0)))
            valid[update] = loss
        elif tag == "train_inner":
            loss = _to_float(entry.get("loss"))
            update = int(_to_float(entry.get("num_updates", 0)) or 0)
            train_inner.append(entry)
            if "gb_free" in entry:
                gb_free.append(_to_float(entry["gb_free"]))
        elif tag == "train":
            loss = _to_float(entry.get("train_loss"))
            update = int(_to_float(entry.get("train_num_updates", 0)) or 0)
            train_epoch.append(entry)
        else:
            continue
        if not math.isfinite(loss):
            nonfinite = True
        elif not nonfinite:
            last_finite = max(last_finite, update)
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
        "last_finite_update": last_finite,
    }


def updates_to_target(curve, target: Optional[float]) -> Optional[int]:
    """The first number of updates whose validation loss is at or below ``target``."""
    if target is None:
        return None
    for updates, loss in curve:
        if math.isfinite(loss) and loss <= target:
            return int(updates)
    return None


def option_value(argv: Sequence[str], option: str) -> Optional[str]:
    """The value of the last ``option VALUE`` or ``option=VALUE`` in a command line (as argparse)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1:]
    return value


_RESUMED = re.compile(r"Loaded checkpoint .* \(epoch \d+ @ (\d+) updates\)")
_EPOCH_UPDATES = re.compile(r"grouped total_num_itrs = (\d+)")


class TrainProgress:
    """How far a fairseq-train run is, from its log lines fed one at a time.

    ``updates``: the latest ``num_updates`` logged (or the resumed checkpoint's);
    ``total``: ``--max-update``, or ``--max-epoch`` times the updates of an epoch
    once fairseq has logged them (``grouped total_num_itrs``), whichever is
    smaller; None while unknown. ``loss``: the latest training loss.
    """

    def __init__(self, max_update: int = 0, max_epoch: int = 0):
        self.max_update, self.max_epoch = max_update, max_epoch
        self.updates = 0
        self.resumed_at: Optional[int] = None
        self.epoch_updates: Optional[int] = None
        self.loss: Optional[float] = None
        self.valid_loss: Optional[float] = None

    @classmethod
    def for_command(cls, cmd: Sequence[str]) -> "TrainProgress":
        """For the fairseq-train command line ``cmd`` (reads --max-update and --max-epoch)."""
        return cls(int(option_value(cmd, "--max-update") or 0), int(option_value(cmd, "--max-epoch") or 0))

    @property
    def total(self) -> Optional[int]:
        limits = []
        if self.max_update > 0:
            limits.append(self.max_update)
        if self.max_epoch > 0 and self.epoch_updates:
            limits.append(self.max_epoch * self.epoch_updates)
        return min(limits) if limits else None

    def feed(self, line: str) -> None:
        m = _RESUMED.search(line)
        if m:
            self.resumed_at = self.updates = int(m.group(1))
            return
        m = _EPOCH_UPDATES.search(line)
        if m:
            self.epoch_updates = int(m.group(1))
            return
        parsed = json_record(line)
        if parsed is None:
            return
        tag, entry = parsed
        if tag == "train_inner":
            self.updates = max(self.updates, int(_to_float(entry.get("num_updates", 0)) or 0))
            self.loss = _to_float(entry.get("loss"))
        elif tag == "train":
            self.updates = max(self.updates, int(_to_float(entry.get("train_num_updates", 0)) or 0))
        elif tag == "valid" and "valid_loss" in entry:
            self.valid_loss = _to_float(entry["valid_loss"])
            self.updates = max(self.updates, int(_to_float(entry.get("valid_num_updates", 0)) or 0))


class LogFollower:
    """The lines appended to a file since the last call (``tail -f`` without waiting)."""

    def __init__(self, path, start: Optional[int] = None):
        self.path = Path(path)
        self.offset = start if start is not None else (self.path.stat().st_size if self.path.exists() else 0)
        self._partial = b""

    def new_lines(self) -> List[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]

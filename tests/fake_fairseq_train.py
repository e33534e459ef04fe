"""Stands in for fairseq-train in the runner's tests (``--train-command "python THIS"``).

Takes fairseq-train's command line, reads --save-dir, --max-update, --log-interval, --seed
and the last --lr, and writes what the runner reads: fairseq's JSON log lines (``train_inner``
every --log-interval updates, ``valid`` at the end), ``checkpoint_best.pt`` and
``checkpoint_last.pt`` (zip archives that hold no model). The loss falls with the rate,
``10 / (1 + lr · update) + 10 · lr · seed`` (so that two rates' difference changes with
--seed); from --lr 1000 on it is nan from update 3 (a diverged run). Environment:
``FAKE_TRAIN_SECONDS_PER_UPDATE`` (default 0) makes
it slow, ``FAKE_TRAIN_PIDFILE`` names a file it writes its process id into once started.
"""

import json
import os
import sys
import time
import zipfile
from pathlib import Path


def option(argv, name, default=None):
    value = default
    for i, arg in enumerate(argv[:-1]):
        if arg == name:
            value = argv[i + 1]
    return value


def log(tag, record):
    print(f"2026-01-01 00:00:00 | INFO | {tag} | {json.dumps(record)}", flush=True)


def main(argv):
    save_dir = Path(option(argv, "--save-dir"))
    max_update = int(option(argv, "--max-update", "4"))
    interval = int(option(argv, "--log-interval", "1"))
    lr = float(option(argv, "--lr", "0.001"))
    seed = int(option(argv, "--seed", "1"))
    seconds = float(os.environ.get("FAKE_TRAIN_SECONDS_PER_UPDATE", "0"))
    save_dir.mkdir(parents=True, exist_ok=True)
    pidfile = os.environ.get("FAKE_TRAIN_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
    print("2026-01-01 00:00:00 | INFO | fairseq_cli.train | num. shared model params: 1,000 "
          "(num. trained: 1,000)", flush=True)
    loss = 10.0
    for update in range(1, max_update + 1):
        time.sleep(seconds)
        loss = float("nan") if lr >= 1000 and update >= 3 else 10.0 / (1.0 + lr * update) + 10 * lr * seed
        if update % interval == 0:
            log("train_inner", {"epoch": 1, "loss": str(loss), "wps": "1000", "num_updates": str(update)})
    log("valid", {"epoch": 1, "valid_loss": str(loss), "valid_num_updates": str(max_update)})
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):  # a zip archive, as torch.save's
        with zipfile.ZipFile(save_dir / name, "w") as checkpoint:
            checkpoint.writestr("fake/data.pkl", f"after {max_update} updates")
    print("2026-01-01 00:00:00 | INFO | fairseq_cli.train | done training", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Child processes of the tools: stopped on signals, measured, and read back.

The comparison runner (:mod:`fairseq_rskip.tools.runner`) and the speed
benchmark (:mod:`fairseq_rskip.tools.benchmark.throughput`) run their heavy work in
child processes. This module is what they share:

- :func:`stop_on_signals`: SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`;
- :func:`run_logged`: a command in a process session of its own, its output
  appended to a log, its peak memory polled, its process group stopped when
  the parent is interrupted;
- :func:`vm_hwm_kib`: a process's peak resident set size (``VmHWM``);
- :func:`run_python_child` and :func:`print_result`: a Python child whose last
  line of output, ``RESULT {json}``, carries its figures back;
- :class:`TreeMemory` and :func:`peak_tree_rss`: the peak, over time, of the
  summed RSS of a process and all its descendants (what a whole tool costs).
"""

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from fairseq_rskip.fairseq_tools import child_env


class Interrupted(KeyboardInterrupt):
    """The tool was told to stop by ``signum`` (SIGINT, SIGTERM or SIGHUP); ``attempt``:
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
    later ones are ignored while the tool stops its children). A signal the tool was
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


# ----------------------------------------------------------------------------
# memory


def _status_kib(pid, field: str) -> int:
    """A ``/proc/PID/status`` field in KiB (``pid`` may be ``"self"``); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def vm_hwm_kib(pid="self") -> int:
    """Peak resident set size (``VmHWM``) of a running process, in KiB; 0 if gone.

    Not ``ru_maxrss`` from ``wait4``: on Linux that also counts the RSS the
    child inherited from its (forking) parent.
    """
    return _status_kib(pid, "VmHWM")


def rss_mib() -> float:
    """This process's resident set size now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def descendants(pid: int) -> list:
    """The ids of every living descendant of ``pid`` (children, their children, ...)."""
    children: Dict[int, list] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _pss_kib(pid) -> int:
    """The proportional set size of a process in KiB (``/proc/PID/smaps_rollup``: each page
    shared by k processes counts 1/k); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_kib(pid: int) -> int:
    """The summed resident set size (``VmRSS``) of ``pid`` and its descendants now, in KiB."""
    return sum(_status_kib(p, "VmRSS") for p in [pid, *descendants(pid)])


def tree_pss_kib(pid: int) -> int:
    """The summed proportional set size of ``pid`` and its descendants now, in KiB: the
    memory the tree holds, pages shared between its processes (torch's libraries) counted once."""
    return sum(_pss_kib(p) for p in [pid, *descendants(pid)])


class TreeMemory:
    """Polls, every ``interval_s`` in a thread, the summed RSS and PSS of a process tree;
    ``peak_kib`` and ``peak_pss_kib`` are the largest sums seen (samples: a peak shorter than
    the interval can be missed)."""

    def __init__(self, pid: int, interval_s: float = 0.2):
        self.pid, self.interval_s, self.peak_kib, self.peak_pss_kib = pid, interval_s, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._done.is_set():
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid))
            self.peak_pss_kib = max(self.peak_pss_kib, tree_pss_kib(self.pid))
            self._done.wait(self.interval_s)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def peak_tree_rss(cmd: Sequence[str], interval_s: float = 0.2) -> tuple:
    """``(exit status, peak summed RSS in MiB, peak summed PSS in MiB)`` of ``cmd`` and every
    process it starts (sampled every ``interval_s``; in the RSS, pages shared between
    processes count once in each; in the PSS, once in all)."""
    proc = subprocess.Popen(list(cmd))
    with TreeMemory(proc.pid, interval_s) as memory:
        returncode = proc.wait()
    return returncode, memory.peak_kib / 1024, memory.peak_pss_kib / 1024


# ----------------------------------------------------------------------------
# a command whose output goes to a log (the runner's fairseq-train and evaluation)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def run_logged(cmd: Sequence[str], log_path: Path, threads: Optional[int] = None,
               watch: Optional[Callable[[], None]] = None) -> dict:
    """Run ``cmd`` with its output appended to ``log_path``, calling ``watch()`` every 0.5 s
    while it runs; returns its exit status, wall time and peak RSS (``VmHWM``).

    The child runs in a process session of its own (a terminal's Ctrl-C reaches only the
    parent); if the parent is interrupted, it stops the child's process group, keeping
    what the child wrote, and raises :class:`Interrupted` with the attempt's record."""
    start = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n### {_stamp()} $ {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=child_env(threads))
        peak_kib = 0

        def attempt() -> dict:
            return {"returncode": proc.returncode, "started": round(start, 3),
                    "wall_s": round(time.time() - start, 2), "max_rss_mib": round(peak_kib / 1024, 1)}

        try:
            while proc.poll() is None:
                peak_kib = max(peak_kib, vm_hwm_kib(proc.pid))
                if watch is not None:
                    watch()
                time.sleep(0.5)
            if watch is not None:
                watch()
        except KeyboardInterrupt as err:
            stop_process_group(proc)
            signum = getattr(err, "signum", signal.SIGINT)
            record = {**attempt(), "interrupted": signal.Signals(signum).name}
            log.write(f"\n### {_stamp()} stopped by the runner ({record['interrupted']})\n")
            raise Interrupted(signum, record) from None
        except BaseException:
            stop_process_group(proc)
            raise
    return attempt()


# ----------------------------------------------------------------------------
# a Python child that reports its figures on its last line (the benchmark's)

RESULT = "RESULT "  # a child's last line: this prefix, then its figures as JSON


def print_result(figures) -> None:
    """Hand ``figures`` (JSON-able) back to the parent of :func:`run_python_child`."""
    print(RESULT + json.dumps(figures), flush=True)


def run_python_child(args: Sequence[str], what: str, echo: Callable[[str], None],
                     quiet: bool = True):
    """``python ARGS`` in a fresh process importing this same fairseq_rskip; returns what it
    handed back with :func:`print_result`. Its other lines go to ``echo`` as they come;
    its stderr is kept for an error (``quiet``) or left to show its progress bars. A
    child that fails raises RuntimeError naming ``what`` with the child's error text."""
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=errors if quiet else None,
            text=True, env={**child_env(), "PYTHONWARNINGS": "ignore"})
        result = None
        for line in proc.stdout:
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT):])
            else:
                echo(line.rstrip("\n"))
        if proc.wait() == 0 and result is not None:
            return result
        errors.seek(0)
        stderr = errors.read()[-3000:]
    why = "killed (SIGKILL: out of memory?)" if proc.returncode == -9 else f"exit code {proc.returncode}"
    raise RuntimeError(f"{what} failed ({why})" + (f":\n{stderr}" if stderr else "; its error is above"))

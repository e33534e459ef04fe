"""The child processes the runner and the benchmark share (fairseq_rskip.tools.common.child_process):
memory of a whole process tree, the result line a child hands back, a logged command."""

import re
import sys
from pathlib import Path

import pytest

from conftest import run
from fairseq_rskip.tools.common.child_process import peak_tree_rss, run_logged, run_python_child, vm_hwm_kib

REPO = Path(__file__).resolve().parents[1]
# a Python child that holds MIB MiB for a second
HOLD = "import time; x = bytearray({mib} * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"


def test_the_peak_of_a_tree_sums_the_processes_alive_together():
    child = f'{sys.executable} -c "{HOLD.format(mib=200)}"'
    _, one, one_pss = peak_tree_rss(["bash", "-c", child])
    code, both, both_pss = peak_tree_rss(["bash", "-c", f"{child} & {child}; wait"])
    assert code == 0
    assert 200 < one < 300
    assert both > 400
    assert 200 < one_pss < 300
    assert both_pss > 400
    assert vm_hwm_kib() > 0
    assert vm_hwm_kib(2**22 + 12345) == 0  # no such process


def test_pages_a_forked_child_shares_count_twice_in_the_rss_once_in_the_pss():
    shared = HOLD.format(mib=300).replace("time.sleep(1.5)", "import os; pid = os.fork(); time.sleep(1.5); "
                                          "pid and os.waitpid(pid, 0)")
    code, rss, pss = peak_tree_rss([sys.executable, "-c", shared])
    assert code == 0
    assert rss > 600
    assert 300 < pss < 450


def test_a_child_hands_back_its_last_line_and_a_failing_one_its_error():
    lines = []
    figures = run_python_child(["-c", "print('working'); print('RESULT {\"tok_s\": 5}')"],
                               what="--demo", echo=lines.append)
    assert figures == {"tok_s": 5}
    assert lines == ["working"]
    with pytest.raises(RuntimeError, match=r"(?s)--demo failed \(exit code 1\):.*no figures here"):
        run_python_child(["-c", "import sys; sys.exit('no figures here')"], what="--demo", echo=print)


def test_a_logged_command_appends_its_output_and_reports_its_exit(tmp_path):
    log = tmp_path / "train.log"
    calls = []
    attempt = run_logged([sys.executable, "-c", HOLD.format(mib=50) + "; print('done'); raise SystemExit(3)"],
                         log, threads=1, watch=lambda: calls.append(1))
    assert attempt["returncode"] == 3
    assert attempt["max_rss_mib"] > 50
    assert calls
    text = log.read_text()
    assert text.startswith("\n### ")
    assert text.rstrip().endswith("done")


@pytest.mark.slow  # a process tree that allocates memory
def test_the_tree_memory_script_prints_the_peak_and_keeps_the_exit_status():
    proc = run([sys.executable, REPO / "benchmarks/peak_tree_rss.py", "--", sys.executable, "-c",
                "raise SystemExit(4)"], check=False)
    assert proc.returncode == 4
    assert re.match(r"peak tree RSS: \d+ MiB, PSS: \d+ MiB ", proc.stdout)
    proc = run([sys.executable, REPO / "benchmarks/peak_tree_rss.py"], check=False)
    assert proc.returncode == 2
    assert "error: no command given" in proc.stderr

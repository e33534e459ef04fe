"""Every shell command README.md gives works as written, in a fresh shell after the set-up it
gives: no variable but HOME, a system PATH and one torch thread; the repository root as the
working directory (a new empty folder for the commands that write under ``work/``); and
first the README's ``source .venv/bin/activate``. The offline commands run for real on the
bundled corpus, at a budget of a few updates where the README gives hundreds; the download,
the GPU training and the evaluation of its checkpoints run as far as they can here (the
download against a network that refuses, fairseq's argument parsing, the check of the
data-bin). A command added to the README without a check here fails
:func:`test_every_readme_command_is_checked`."""

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import joined_line
from fairseq_rskip.data_prep.datasets import RECIPES
from fairseq_rskip.fairseq_tools import PLUGIN_DIR

pytestmark = pytest.mark.slow  # the demo, the bundled corpus and a comparison, end to end

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
ACTIVATE = "source .venv/bin/activate"
# programs whose inline `code` in the README, with arguments, is a command a reader runs
PROGRAMS = ("bash ", "source ", "pip ", "python ", "rskip-", "fairseq-")


def readme_commands():
    """The README's shell commands: each line of an indented code block (joined over its
    ``\\`` continuations, its comment dropped), and each inline `code` span, within a
    paragraph even across a line break, that is a program with arguments; outside HTML
    comments."""
    text = re.sub(r"<!--.*?-->", "", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)
    found, prose, lines, i = [], [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("    ") and (i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("    ")):
            command, i = joined_line(lines, i)
            command = command.split("  #")[0].strip()
            if command and not command.startswith("#"):
                found.append(command)
        else:
            prose.append(line)
        i += 1
    for paragraph in "\n".join(prose).split("\n\n"):
        for span in re.findall(r"`([^`]+)`", paragraph.replace("\n", " ")):
            if " " in span and span.startswith(PROGRAMS):
                found.append(span)
    return list(dict.fromkeys(found))


def fresh_shell(command, cwd=REPO, extra_env=None, timeout=900):
    """``command`` in ``bash -c`` after the README's activation, in a clean environment."""
    env = {"HOME": os.environ.get("HOME", str(REPO)), "PATH": "/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", **(extra_env or {})}
    script = f"cd {shlex.quote(str(REPO))} && {ACTIVATE} && cd {shlex.quote(str(cwd))} && {command}"
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module", autouse=True)
def set_up():
    if not (VENV / "bin" / "activate").is_file():
        pytest.skip("no .venv in the checkout: run scripts/setup_env.sh (the README's set-up)")
    ok(fresh_shell("true"))


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A new empty folder, with the bundled corpus prepared there as the README prepares it."""
    return tmp_path_factory.mktemp("readme")


# ---------------------------------------------------------------- one check per command


def check_setup_env(command, tmp):
    ok(fresh_shell(command))


def check_activate(command, tmp):
    proc = ok(fresh_shell("command -v rskip-prepare rskip-reproduce rskip-evaluate fairseq-train python"))
    assert [Path(p).parent for p in proc.stdout.split()] == [VENV / "bin"] * 5, proc.stdout


def check_user_dir(command, tmp):
    proc = ok(fresh_shell(f"cd /tmp && echo {command}"))
    assert proc.stdout.split() == ["--user-dir", str(PLUGIN_DIR)]


def check_pip_install(command, tmp):
    """Into an environment that has fairseq-fixed: pip resolves the package without touching
    the network or the environment (--dry-run, --no-index, the installed setuptools)."""
    proc = ok(fresh_shell(f"{command} --dry-run --no-index --no-build-isolation"))
    assert re.search(r"Would install fairseq[_-]rskip-", proc.stdout), proc.stdout


def check_demo(command, tmp):
    """The whole demo (set-up, the bundled corpus, two trainings, the table) at 4 updates,
    without the evaluation, its work/ in ``tmp`` (RSKIP_WORK)."""
    proc = ok(fresh_shell(f"{command} --max-update 4 --no-bleu", extra_env={"RSKIP_WORK": str(tmp / "work")}))
    assert "| postln | 3 | 1 | 1 ok |" in proc.stdout and "| rskip | 3 | 1 | 1 ok |" in proc.stdout
    assert (tmp / "work" / "demo" / "results.md").is_file()


def check_tests(command, tmp):
    proc = ok(fresh_shell(f"{command} --collect-only -q -p no:cacheprovider tests/test_readme.py"))
    assert re.search(r"\d+ tests? collected", proc.stdout), proc.stdout


def check_download(command, tmp):
    """No network (every proxy a closed port): one error line naming --archive-dir and the
    archives it takes."""
    closed = "http://127.0.0.1:9"
    proxies = {name: closed for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}
    proc = fresh_shell(command, cwd=tmp, extra_env=proxies)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1, proc.stderr[-3000:]
    assert "give it as --archive-dir DIR" in error_lines(proc)[0]
    for archive in RECIPES[shlex.split(command)[1].replace("-", "_")][0]["archives"]:
        assert archive.name in error_lines(proc)[0]


def check_gpu_training(command, tmp):
    """fairseq's own parser takes the command as written, with the plugin's architecture."""
    argv = shlex.split(command)[1:]
    parse = ("import sys; from fairseq import options; "
             "a = options.parse_args_and_arch(options.get_training_parser(), sys.argv[1:]); "
             "print(a.arch, a.fp16, a.max_epoch)")
    proc = ok(fresh_shell(f"python -c {shlex.quote(parse)} {shlex.join(argv)}"))
    assert proc.stdout.split()[-3:] == ["transformer_rskip_iwslt_de_en", "True", "60"], proc.stdout


def check_evaluate_checkpoints(command, tmp):
    """Parsed as written, it stops at the data-bin that is not there yet, naming it."""
    proc = fresh_shell(command, cwd=tmp)
    assert proc.returncode == 2 and len(error_lines(proc)) == 1, proc.stderr[-3000:]
    assert "work/iwslt14.de-en/data-bin" in error_lines(proc)[0]


def check_prepare_bundled(command, tmp):
    proc = ok(fresh_shell(command, cwd=tmp))
    assert proc.stdout.strip().splitlines()[-1] == "work/bundled/data-bin"


def check_compare(command, tmp):
    """After rskip-prepare bundled, at 20 updates: both runs' translations named degenerate,
    no "significant", and the warning that the budget ends in the warm-up."""
    if not (tmp / "work" / "bundled" / "data-bin").is_dir():
        check_prepare_bundled("rskip-prepare bundled", tmp)
    short = re.sub(r"--max-update \d+", "--max-update 20", command)
    assert short != command
    proc = ok(fresh_shell(short, cwd=tmp))
    assert "warning: --max-update 20 ends before the recipe's 200 warm-up updates" in proc.stderr
    assert "the translations are degenerate (postln-d3-s1: " in proc.stdout
    assert "rskip-d3-s1: " in proc.stdout and "significant" not in proc.stdout
    assert "significant" not in (tmp / "work" / "compare" / "results.md").read_text(encoding="utf-8")


CHECKS = {
    r"bash scripts/setup_env\.sh": check_setup_env,
    re.escape(ACTIVATE): check_activate,
    r"--user-dir \"\$\(python -c '.*'\)\"": check_user_dir,
    r"pip install --no-deps \.": check_pip_install,
    r"bash scripts/run_demo\.sh": check_demo,
    r"bash scripts/run_tests\.sh( -m \"not slow\")?": check_tests,
    r"rskip-prepare (iwslt14|iwslt15-envi|wmt14-en2de)": check_download,
    r"fairseq-train work/iwslt14\.de-en/data-bin .*--fp16 .*": check_gpu_training,
    r"rskip-evaluate --data work/iwslt14\.de-en/data-bin --checkpoint-dir .*": check_evaluate_checkpoints,
    r"rskip-prepare bundled": check_prepare_bundled,
    r"rskip-reproduce --archs .* --data work/bundled/data-bin .*": check_compare,
}


def check_of(command):
    matches = [check for pattern, check in CHECKS.items() if re.fullmatch(pattern, command)]
    return matches[0] if len(matches) == 1 else None


def test_every_readme_command_is_checked():
    commands = readme_commands()
    assert ACTIVATE in commands and "rskip-prepare bundled" in commands and len(commands) >= 10
    assert [c for c in commands if check_of(c) is None] == []


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_works_as_written(command, elsewhere):
    check = check_of(command)
    if check is None:
        pytest.fail(f"no check for the README's command: {command}")
    # the demo, rskip-prepare bundled and the comparison share one work/ (one bundled corpus)
    tmp = elsewhere if check in (check_demo, check_prepare_bundled, check_compare) else elsewhere / check.__name__
    tmp.mkdir(exist_ok=True)
    check(command, tmp)

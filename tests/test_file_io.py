"""The shared output helpers: atomic writes and the folder lock."""

import json
import subprocess
import sys

import pytest

from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.file_io import atomic_output, locked, remove_partials, write_json


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "sub" / "result.txt"
    with pytest.raises(KeyError):
        with atomic_output(out) as tmp:
            tmp.write_text("half")
            raise KeyError("interrupted")
    assert not out.exists() and list((tmp_path / "sub").iterdir()) == []
    write_json(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    (tmp_path / "sub" / ".partial-1-x").write_text("left by a killed run")
    remove_partials(tmp_path)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["result.txt"]


HOLD = """
import os, sys, time
from filelock import FileLock
os.makedirs(sys.argv[1])
with FileLock(os.path.join(sys.argv[1], ".lock")):  # what locked() holds
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_locked_folder_is_refused_clearly(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "dest")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(UserError, match=r"dest .*dest is in use by another process"):
            with locked(tmp_path / "dest", what="dest"):
                pass

        def main(argv):
            with locked(tmp_path / "dest"):
                return 0

        with pytest.raises(SystemExit) as exc:
            run_main(main)
        assert exc.value.code == 2
        assert capsys.readouterr().err.startswith("error: folder ")
    finally:
        holder.kill()
        holder.wait()
    with locked(tmp_path / "dest"):  # free again once its holder is gone
        pass


def test_the_lock_nests_within_a_process_and_refuses_a_file(tmp_path):
    """A recipe locks its --dest and runs the pipeline, which locks it again."""
    from filelock import FileLock, Timeout

    with locked(tmp_path / "dest", what="--dest"):
        with locked(tmp_path / "dest" / ".." / "dest", what="--dest"):  # the same folder
            pass
        with pytest.raises(Timeout):  # still held after the inner block
            FileLock(tmp_path / "dest" / ".lock").acquire(timeout=0)
    FileLock(tmp_path / "dest" / ".lock").acquire(timeout=0)  # released by the outer one
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=r"--dest .*file is a file, not a folder"):
        with locked(tmp_path / "file", what="--dest"):
            pass

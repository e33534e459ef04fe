"""The evaluation and averaging commands, and checkpoint loading, fail with the real reason
and what to do: one ``error:`` line, exit status 2, no traceback."""

import argparse
import fractions
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from fairseq_rskip.checkpoint_compat import load_checkpoint
from fairseq_rskip.tools.average_checkpoints import cli as average_cli
from fairseq_rskip.scoring import cli as evaluate_cli
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.fairseq_tools import PLUGIN_DIR
from conftest import BIN, run

REPO = Path(__file__).resolve().parents[1]


def error_line(capsys, main, argv):
    with pytest.raises(SystemExit) as exc:
        run_main(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def data_bin(tmp_path):
    """What fairseq-generate reads before the checkpoint: the dictionaries (the languages
    come from prep.json, as rskip-prepare writes it)."""
    folder = tmp_path / "prep" / "data-bin"
    folder.mkdir(parents=True)
    for lang in ("src", "tgt"):
        (folder / f"dict.{lang}.txt").write_text("w1 5\nw2 3\n")
    (folder / "prep.json").write_text(json.dumps({"src_lang": "src", "tgt_lang": "tgt", "bpe": "none"}))
    return folder


@pytest.fixture
def bad_checkpoints(tmp_path):
    """An empty file, a text file, a truncated checkpoint, each with the cause it must be told."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.pt").write_bytes(b"")
    (folder / "notes.pt").write_text("hello\n")
    torch.save({"model": {"w": torch.ones(64, 64)}}, folder / "whole.pt")
    data = (folder / "whole.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    return {
        folder / "empty.pt": r"is empty \(0 bytes\), not a checkpoint: the save that wrote it was "
                             r"probably interrupted; use another checkpoint",
        folder / "notes.pt": r"is not a PyTorch checkpoint \(it begins with b'hell'; torch\.save "
                             r"writes a zip archive\): give a checkpoint that fairseq-train saved",
        folder / "truncated.pt": r"is damaged \(a truncated or corrupted zip archive\)",
    }


def test_evaluate_says_what_to_do(tmp_path, data_bin, capsys):
    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save({"model": {}}, ckpt)
    base = ["--checkpoint", ckpt]
    assert error_line(capsys, evaluate_cli.main, ["--data", data_bin, *base, "--beam", "0"]) == (
        "error: --beam must be at least 1 (the hypotheses beam search keeps; 1 is greedy "
        "search); got 0")
    missing = tmp_path / "generate-test.txt"
    assert error_line(capsys, evaluate_cli.main,
                      ["--data", data_bin, *base, "--generate-output", missing]) == (
        f"error: --generate-output {missing} not found: give a file fairseq-generate wrote (its "
        "standard output), or leave --generate-output out to translate now")
    prep = data_bin.parent
    assert error_line(capsys, evaluate_cli.main, ["--data", prep, *base]) == (
        f"error: --data {prep} is the folder rskip-prepare made, not its data-bin: give "
        f"--data {data_bin}")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert error_line(capsys, evaluate_cli.main, ["--data", empty, *base]).startswith(
        f"error: --data {empty} is not a fairseq data-bin (it has no dict.*.txt)")
    # the shell wrapper: the same line
    proc = subprocess.run(["bash", str(REPO / "scripts" / "evaluate.sh"), "--data", str(data_bin),
                           "--checkpoint", str(ckpt), "--beam", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: --beam must be at least 1" in proc.stderr


def test_average_checkpoints_gives_the_real_reason(tmp_path, capsys):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for n in (1, 2):
        torch.save({"model": {"w": torch.full((2,), float(n))}}, folder / f"checkpoint{n}.pt")
    out = tmp_path / "avg.pt"
    for flag in ("--num-epoch-checkpoints", "--num-update-checkpoints"):
        assert error_line(capsys, average_cli.main, ["--inputs", folder, "--output", out, flag, "0"]) == (
            f"error: {flag} must be at least 1 (the number of checkpoints to average); got 0")
    assert error_line(capsys, average_cli.main, ["--inputs", folder, "--output", out]) == (
        f"error: {folder} is a folder: give --num-epoch-checkpoints N or --num-update-checkpoints "
        "N to average its last N checkpoints, or list the checkpoint files in --inputs")
    assert error_line(capsys, average_cli.main, ["--inputs", folder / "checkpoint1.pt", "--output", out,
                                                 "--num-epoch-checkpoints", "1"]).startswith(
        f"error: {folder / 'checkpoint1.pt'} is not a folder")
    assert not out.exists()
    average_cli.main(["--inputs", str(folder), "--output", str(out), "--num-epoch-checkpoints", "2"])
    assert torch.equal(torch.load(out)["model"]["w"], torch.full((2,), 1.5))


def test_checkpoints_that_do_not_load_are_named_with_the_cause(tmp_path, data_bin, bad_checkpoints, capsys):
    from fairseq_rskip.models import RSkipTransformerModel

    for path, cause in bad_checkpoints.items():
        # the averaging command (and rskip-evaluate --avg-last, which averages in-process)
        line = error_line(capsys, average_cli.main, ["--inputs", path, path, "--output", tmp_path / "a.pt"])
        assert line.startswith(f"error: {path} ") and re.search(cause, line), line
        # rskip-evaluate, before it starts fairseq-generate
        line = error_line(capsys, evaluate_cli.main, ["--data", data_bin, "--checkpoint", path])
        assert line.startswith(f"error: {path} ") and re.search(cause, line), line
        # the plugin's hub loader
        with pytest.raises(UserError, match=cause):
            RSkipTransformerModel.from_pretrained(str(path.parent), checkpoint_file=path.name,
                                                  data_name_or_path=str(data_bin))
    # a checkpoint holding objects outside the allow-list: refused, with torch's reason
    evil = tmp_path / "evil.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, evil)
    with pytest.raises(UserError, match=r"cannot load .*evil\.pt as a checkpoint: UnpicklingError: "
                                        r"Weights only load failed"):
        load_checkpoint(evil)


def test_a_checkpoint_loaded_without_the_plugin_is_explained(tmp_path, data_bin, capsys):
    """fairseq-generate with another --user-dir cannot load a fairseq checkpoint under torch's
    weights-only default (its argparse.Namespace): rskip-evaluate names the cause and the fix."""
    other = tmp_path / "other_plugin"
    other.mkdir()
    (other / "__init__.py").write_text("")
    ckpt = tmp_path / "checkpoint_best.pt"
    torch.save({"args": argparse.Namespace(arch="transformer"), "cfg": None, "model": {}}, ckpt)
    line = error_line(capsys, evaluate_cli.main, ["--data", data_bin, "--checkpoint", ckpt,
                                                  "--user-dir", other])
    assert line == (
        f"error: fairseq-generate could not load the checkpoint: {ckpt} is a fairseq checkpoint, "
        "which holds an argparse.Namespace: torch >= 2.6 loads checkpoints weights-only and "
        "refuses it unless fairseq_rskip is imported (it allow-lists fairseq's checkpoint types). "
        f"Give the fairseq command --user-dir {PLUGIN_DIR}, or import fairseq_rskip before "
        "loading the checkpoint in Python")


@pytest.mark.parametrize("inside", ["models", "optim/lr_scheduler", "tools"])
def test_a_user_dir_inside_the_plugin_ends_with_one_line(tmp_path, inside):
    """fairseq imports ``--user-dir DIR`` as a top-level module named after DIR's last folder;
    a folder inside the plugin would register the architectures twice (fairseq's "Cannot
    register duplicate model architecture" traceback). The command ends with one line naming
    the folder to give, and no traceback."""
    proc = run([BIN / "fairseq-train", tmp_path / "data-bin", "--user-dir", Path(PLUGIN_DIR) / inside,
                "--arch", "transformer_rskip_tiny", "--cpu"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --user-dir {Path(PLUGIN_DIR) / inside} is a folder inside the plugin: give the "
        f"plugin's own folder, --user-dir {PLUGIN_DIR}")


def test_the_plugin_imported_as_itself_is_not_refused():
    from fairseq_rskip.errors import UserDirError, refuse_import_as_top_level

    refuse_import_as_top_level("fairseq_rskip.models", str(Path(PLUGIN_DIR) / "models" / "__init__.py"))
    with pytest.raises(UserDirError, match=r"give the plugin's own folder") as exc:
        refuse_import_as_top_level("models", str(Path(PLUGIN_DIR) / "models" / "__init__.py"))
    assert isinstance(exc.value, SystemExit) and exc.value.code.startswith("error: --user-dir ")

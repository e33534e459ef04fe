"""The installed commands work from any directory: from an empty folder outside the
checkout, the console scripts of this environment prepare the bundled corpus (shipped
inside the package), stock fairseq-train trains with --user-dir the installed package's
folder, rskip-evaluate scores it, and rskip-reproduce runs a comparison with BLEU."""

import importlib.metadata
import json
import os
import sys

import pytest

from conftest import BIN, REPO, run
from fairseq_rskip.data_prep.bundled import CORPUS_DIR

pytestmark = pytest.mark.slow  # stock fairseq commands end to end

COMMANDS = ("rskip-prepare", "rskip-evaluate", "rskip-average-checkpoints", "rskip-reproduce",
            "rskip-gradient-analysis", "rskip-warmup-demo", "rskip-signal-propagation",
            "rskip-output-change", "rskip-gpu-check", "rskip-source-use", "rskip-benchmark")
TRAIN = ["--share-all-embeddings", "--optimizer", "adam", "--max-tokens", "2000", "--max-update", "3",
         "--num-workers", "0", "--cpu", "--no-epoch-checkpoints"]
# one intra-op thread: on a shared 2-core machine torch's thread pool otherwise spins against other jobs
ENV = {"OMP_NUM_THREADS": "1"}


def command(name, *args, cwd, check=True):
    exe = BIN / name
    assert exe.is_file(), f"{exe} is not installed: run scripts/setup_env.sh (pip install -e .)"
    return run([exe, *args], cwd=cwd, check=check, env=ENV)


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """An empty folder outside the checkout, with the bundled corpus prepared there by rskip-prepare."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    assert REPO not in cwd.parents
    proc = command("rskip-prepare", "bundled", cwd=cwd)  # default DEST: work/bundled, here
    assert proc.stdout.strip() == "work/bundled/data-bin"
    return cwd


def test_every_command_is_installed():
    installed = {ep.name: ep for ep in importlib.metadata.distribution("fairseq_rskip").entry_points
                 if ep.group == "console_scripts"}
    assert sorted(installed) == sorted(COMMANDS), "commands not installed here: run scripts/setup_env.sh"
    for name, ep in installed.items():
        assert (BIN / name).is_file(), f"{BIN / name} is not installed: run scripts/setup_env.sh"
        assert callable(ep.load())  # the ones not run below: their module and function exist


def test_prepare_the_bundled_corpus(elsewhere):
    databin = elsewhere / "work" / "bundled" / "data-bin"
    meta = json.loads((databin / "prep.json").read_text())
    assert (meta["src_lang"], meta["tgt_lang"]) == ("de", "en")
    manifest = json.loads((CORPUS_DIR / "manifest.json").read_text())
    assert meta["sentences"]["test"] == manifest["sentences"]["test"]
    assert meta["sentences"]["valid"] == manifest["sentences"]["valid"]
    assert 0.9 * manifest["sentences"]["train"] < meta["sentences"]["train"] <= manifest["sentences"]["train"]
    assert (databin / "dict.de.txt").read_text() == (databin / "dict.en.txt").read_text()
    # the shell wrapper of the checkout is the same command: it reuses every finished step
    before = mtimes(databin)
    proc = run(["bash", REPO / "scripts" / "prepare-bundled.sh", elsewhere / "work" / "bundled"], env=ENV)
    assert proc.stdout.strip() == str(elsewhere / "work" / "bundled" / "data-bin")
    assert mtimes(databin) == before


def test_compare_and_evaluate(elsewhere):
    """rskip-reproduce trains with stock fairseq-train and --user-dir the installed package's
    folder, and scores with rskip-evaluate; the command scores its checkpoints the same."""
    user_dir = run([sys.executable, "-c", "import fairseq_rskip, os; print(os.path.dirname(fairseq_rskip.__file__))"],
                   cwd=elsewhere).stdout.strip()
    assert os.path.isfile(os.path.join(user_dir, "corpus", "ding-de-en", "train.de.gz"))
    config = {
        "name": "entry points", "size": "tiny", "archs": ["postln", "rskip"], "depths": [1],
        "seeds": [1], "lr": 1e-3, "warmup_updates": 2, "log_interval": 1, "threads": 1,
        "train_args": TRAIN,
        "eval": {"subset": "valid", "beam": 1, "extra_args": ["--max-len-b", "5"]},
    }
    (elsewhere / "compare.json").write_text(json.dumps(config))
    proc = command("rskip-reproduce", "--config", "compare.json", "--data", "work/bundled/data-bin",
                   "--out", "compare", cwd=elsewhere)
    assert "wrote compare/results.md" in proc.stdout
    rows = (elsewhere / "compare" / "results.csv").read_text().splitlines()
    assert rows[0].startswith("arch,depth,seeds,status,bleu,sacrebleu")
    assert [r.split(",")[:4] for r in rows[1:]] == [["postln", "1", "1", "1 ok"], ["rskip", "1", "1", "1 ok"]]
    runs = elsewhere / "compare" / "runs"
    for arch in ("postln", "rskip"):
        result = json.loads((runs / f"{arch}-d1-s1" / "result.json").read_text())
        assert result["num_updates"] == 3 and result["bleu"] is not None
        assert result["eval"]["num_sentences"] == 505
        assert result["command"].startswith(f"{BIN / 'fairseq-train'} work/bundled/data-bin --user-dir {user_dir} ")

    proc = command("rskip-evaluate", "--data", "work/bundled/data-bin", "--checkpoint-dir", "compare/runs/rskip-d1-s1/checkpoints",
                   "--subset", "valid", "--beam", "1", "--json-out", "eval.json", "--", "--max-len-b", "5",
                   cwd=elsewhere)
    assert proc.stdout.startswith("BLEU tokenized=")
    record = json.loads((elsewhere / "eval.json").read_text())
    assert record["checkpoint"] == str(runs / "rskip-d1-s1" / "checkpoints" / "checkpoint_best.pt")
    assert (record["bleu_tokenized"], record["sacrebleu"]) == (result["bleu"], result["sacrebleu"])

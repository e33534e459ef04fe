"""The comparison runner never reports results it did not produce: runs keyed by
everything that determines them, fairseq-train options only after --, children stopped on
signals, run folders locked. A fake fairseq-train (tests/fake_fairseq_train.py) stands in
for the real one: the behaviour under test is the runner's own."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_rskip.tools import runner as rp
from fairseq_rskip.tools.runner.report import write_tables
from fairseq_rskip.tools.runner import cli as reproduce_cli
from fairseq_rskip.errors import UserError
from fairseq_rskip.variants import VARIANTS

REPO = Path(__file__).resolve().parents[1]
FAKE_TRAIN = [sys.executable, str(REPO / "tests" / "fake_fairseq_train.py")]
FAKE_EVALUATE = [sys.executable, str(REPO / "tests" / "fake_rskip_evaluate.py")]


def make_data_bin(folder: Path) -> Path:
    """What the runner checks of a data-bin: two dictionaries, train and valid splits."""
    folder.mkdir(parents=True)
    for lang in ("src", "tgt"):
        (folder / f"dict.{lang}.txt").write_text("w1 5\nw2 3\n")
        for split in ("train", "valid", "test"):
            (folder / f"{split}.src-tgt.{lang}.idx").write_bytes(b"\0" * 16)
            (folder / f"{split}.src-tgt.{lang}.bin").write_bytes(b"\0" * 32)
    return folder


@pytest.fixture
def data_bin(tmp_path):
    return make_data_bin(tmp_path / "data-bin")


def config(**kw) -> rp.Config:
    cfg = rp.Config(name="fake", size="tiny", depths=[2], seeds=[1], lr=1e-3, warmup_updates=10,
                    log_interval=1, train_args=["--max-update", "4"], eval=None)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run(cfg, out, data, **kw):
    lines = []
    rows = rp.reproduce(cfg, out, data=data, archs=["postln"], train_program=FAKE_TRAIN,
                        echo=lines.append, **kw)
    return rows, lines


# ---------------------------------------------------------------------------- 1. identity


def test_a_run_made_with_other_settings_is_refused_or_rerun_beside(data_bin, tmp_path):
    out = tmp_path / "out"
    rows, _ = run(config(), out, data_bin)
    assert rows[0]["status"] == "1 ok"
    first = out / "runs" / "postln-d2-s1"
    identity = json.loads((first / "run.json").read_text())["identity"]
    assert "--lr" in identity["fairseq_train"] and "--save-dir" not in identity["fairseq_train"]
    assert set(identity["data_bin"]) >= {"dict.src.txt", "train.src-tgt.src.idx"}
    config_json = (out / "config.json").read_text()

    # another learning rate: refused, naming it; nothing is trained, config.json is kept
    with pytest.raises(UserError, match=r"postln-d2-s1: --lr: 0\.001 there, 0\.002 now"):
        run(config(lr=2e-3), out, data_bin)
    # other fairseq-train options after --
    with pytest.raises(UserError, match=r"--max-update: 4 there, 4 then 6 now"):
        run(config(), out, data_bin, extra_args=["--max-update", "6"])
    # another data-bin content under the same path
    (data_bin / "dict.tgt.txt").write_text("w1 5\nw3 3\n")
    with pytest.raises(UserError, match=r"data-bin: dict\.tgt\.txt differ"):
        run(config(), out, data_bin)
    (data_bin / "dict.tgt.txt").write_text("w1 5\nw2 3\n")
    # other evaluation settings, and other threads
    with pytest.raises(UserError, match=r"evaluation: none there, \{\"avg_last\": 0, \"beam\": 4"):
        run(config(eval={"beam": 4}), out, data_bin, evaluate_command=FAKE_TRAIN)
    with pytest.raises(UserError, match=r"threads: none there, 1 now"):
        run(config(threads=1), out, data_bin)
    with pytest.raises(UserError, match=r"--rerun-changed"):
        run(config(lr=2e-3), out, data_bin, report_only=True)
    assert (out / "config.json").read_text() == config_json
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["postln-d2-s1"]

    # when asked, the changed run trains into a folder of its own, beside the first
    rows, lines = run(config(lr=2e-3), out, data_bin, rerun_changed=True)
    (second,) = [p for p in (out / "runs").iterdir() if p != first]
    assert second.name.startswith("postln-d2-s1-") and any(second.name in line for line in lines)
    record = json.loads((second / "result.json").read_text())
    assert "--lr 0.002" in record["command"] and record["run"] == second.name
    assert json.loads((out / "config.json").read_text())["lr"] == 2e-3
    assert "--lr 0.001" in json.loads((first / "result.json").read_text())["command"]
    # each setting finds its own run again, without --rerun-changed
    for cfg, folder in ((config(lr=2e-3), second), (config(), first)):
        mtime = (folder / "result.json").stat().st_mtime_ns
        rows, lines = run(cfg, out, data_bin)
        assert any("finished earlier" in line for line in lines)
        assert (folder / "result.json").stat().st_mtime_ns == mtime
        assert json.loads((out / "config.json").read_text())["lr"] == cfg.lr


def test_the_scored_checkpoint_is_the_best_or_the_last(data_bin, tmp_path):
    def scored(out):
        run_dir = out / "runs" / "postln-d2-s1"
        record = json.loads((run_dir / "result.json").read_text())
        evaluation = json.loads((run_dir / "run.json").read_text())["identity"]["evaluation"]
        return Path(record["eval"]["checkpoint"]).name, evaluation

    run(config(eval={"beam": 5}), tmp_path / "best", data_bin, evaluate_command=FAKE_EVALUATE)
    name, evaluation = scored(tmp_path / "best")
    # the default names no checkpoint in the identity: runs made before the key keep theirs
    assert name == "checkpoint_best.pt" and "checkpoint" not in evaluation
    run(config(eval={"beam": 5, "checkpoint": "last"}), tmp_path / "last", data_bin,
        evaluate_command=FAKE_EVALUATE)
    name, evaluation = scored(tmp_path / "last")
    assert name == "checkpoint_last.pt" and evaluation["checkpoint"] == "last"
    # the same run scored on another checkpoint is another run
    with pytest.raises(UserError, match=r'evaluation: .* there, .*"checkpoint": "last"'):
        run(config(eval={"beam": 5, "checkpoint": "last"}), tmp_path / "best", data_bin,
            evaluate_command=FAKE_EVALUATE)
    # the command line's --eval-checkpoint sets it, and config.json records it
    assert cli("--data", data_bin, "--archs", "postln", "--depths", "2", "--out", tmp_path / "cli",
               "--train-command", " ".join(FAKE_TRAIN), "--evaluate-command", " ".join(FAKE_EVALUATE),
               "--eval-checkpoint", "last", "--", "--max-update", "4") == 0
    assert scored(tmp_path / "cli")[0] == "checkpoint_last.pt"
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["eval"]["checkpoint"] == "last"
    # refused before anything trains
    for bad, message in (({"checkpoint": "first"}, r"must be one of \['best', 'last'\]; got 'first'"),
                         ({"checkpoint": "last", "avg_last": 5}, "cannot be combined"),
                         ({"beams": 5}, r"unknown keys \['beams'\]")):
        with pytest.raises(UserError, match=message):
            run(config(eval=bad), tmp_path / "bad", data_bin, evaluate_command=FAKE_EVALUATE)
        assert not (tmp_path / "bad" / "runs").exists()


def test_a_folder_of_the_earlier_runner_is_adopted_only_with_the_same_command(data_bin, tmp_path):
    """Run folders written before run.json existed: their train.log names the command."""
    out = tmp_path / "out"
    cfg = config()
    (run_,) = rp.plan_runs(cfg, {"postln": VARIANTS["postln"]}, out, data_bin)
    folder = out / "runs" / "postln-d2-s1"
    folder.mkdir(parents=True)
    old = ["/old/venv/bin/fairseq-train", str(data_bin), "--user-dir", "/old/fairseq_rskip",
           *rp.train_settings(cfg, run_)]
    old[old.index("--seed"):old.index("--seed")] = ["--save-dir", str(folder / "checkpoints")]
    (folder / "train.log").write_text(f"\n### 2026-01-01 00:00:00 $ {' '.join(old)}\nlog\n")
    (folder / "result.json").write_text(json.dumps({
        "arch": "postln", "depth": 2, "seed": 1, "status": "ok", "best_valid_loss": 5.0,
        "tokens_per_s": 1.0, "peak_rss_mib": 1.0, "valid_curve": [[4, 5.0]], "bleu": None}))
    rows, lines = run(cfg, out, data_bin)
    assert any("finished earlier" in line for line in lines) and rows[0]["best_valid_loss"] == "5.000"
    with pytest.raises(UserError, match=r"--lr: 0\.001 there, 0\.005 now"):
        run(config(lr=5e-3), out, data_bin)
    # two trainings mixed in one folder (the same command but --lr 5): never adopted
    other = [a if a != "0.001" else "5" for a in old]
    with open(folder / "train.log", "a") as log:
        log.write(f"\n### 2026-01-01 00:00:01 $ {' '.join(other)}\nlog\n")
    with pytest.raises(UserError, match=r"postln-d2-s1: its train\.log holds several different "
                                        r"fairseq-train commands"):
        run(cfg, out, data_bin)
    # checkpoints without a record of their command: never resumed
    (folder / "train.log").unlink()
    (folder / "result.json").unlink()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "checkpoint_last.pt").write_text("x")
    with pytest.raises(UserError, match=r"it holds checkpoints but no record of the command"):
        run(cfg, out, data_bin)


def test_a_damaged_checkpoint_to_resume_from_is_named(data_bin, tmp_path):
    """fairseq copies checkpoint_last.pt into place; a kill during the copy leaves part of it."""
    out = tmp_path / "out"
    run(config(), out, data_bin)
    run_dir = out / "runs" / "postln-d2-s1"
    for name in ("result.json", "trained.json"):
        (run_dir / name).unlink()
    last = run_dir / "checkpoints" / "checkpoint_last.pt"
    last.write_bytes(b"")
    with pytest.raises(UserError, match=rf"cannot resume postln-d2-s1: {last} is empty \(0 bytes\)"
                                        r".* move checkpoint_last\.pt away"):
        run(config(), out, data_bin)
    assert len((run_dir / "attempts.jsonl").read_text().splitlines()) == 1  # nothing started


# ---------------------------------------------------------------------------- 3. options


def cli(*argv):
    return reproduce_cli.main([*map(str, argv)])


def test_only_options_after_double_dash_reach_fairseq_train(data_bin, tmp_path, capsys):
    base = ["--data", data_bin, "--archs", "postln", "--depths", "2", "--no-bleu",
            "--train-command", " ".join(FAKE_TRAIN)]
    with pytest.raises(UserError, match=r"unknown option\(s\) --dropout 0.2: options for "
                       r"fairseq-train go after --"):
        cli(*base, "--out", tmp_path / "a", "--dropout", "0.2")
    with pytest.raises(UserError, match=r"--lr 5: .* --lr is set by the runner: use \"lr\""):
        cli(*base, "--out", tmp_path / "a", "--lr", "5")
    for option, instead in (("--seed", "--seeds"), ("--save-dir", "--out"), ("--arch", "--archs"),
                            ("--lr", '"lr"'), ("--lr-scheduler", '"nowarmup"'),
                            ("--warmup-updates", '"warmup_updates"'), ("--log-format", "JSON log"),
                            ("--encoder-layers", "--depths"), ("--log-interval", '"log_interval"')):
        with pytest.raises(UserError, match=rf'the options after -- \("extra_args"\) set {option}, '
                           rf"which the runner sets itself .*: use .*{instead}"):
            cli(*base, "--out", tmp_path / "a", "--", f"{option}=7")
    assert not (tmp_path / "a" / "runs").exists()
    # without --depths the layers are the user's to set
    cfg = config(depths=[None])
    rows, _ = run(cfg, tmp_path / "b", data_bin, extra_args=["--encoder-layers", "3"])
    assert "--encoder-layers 3" in json.loads(
        (tmp_path / "b/runs/postln-ddefault-s1/result.json").read_text())["command"]
    # the configuration's own train_args and variants: the same rules
    with pytest.raises(UserError, match=r"the configuration's \"train_args\" set --seed"):
        run(config(train_args=["--seed", "7"]), tmp_path / "c", data_bin)
    bad = config(variants={"mine": {"arch": "transformer{size}", "args": ["--save-dir", "x"]}})
    with pytest.raises(UserError, match=r"variant 'mine'\'s \"args\" set --save-dir"):
        rp.reproduce(bad, tmp_path / "c", data=data_bin, archs=["mine"], train_program=FAKE_TRAIN)

    # what follows -- is recorded: in the command (after the variant's flags), the run's
    # identity and config.json
    assert cli(*base, "--out", tmp_path / "d", "--", "--max-update", "6", "--dropout", "0.2") == 0
    run_dir = tmp_path / "d" / "runs" / "postln-d2-s1"
    record = json.loads((run_dir / "result.json").read_text())
    assert record["num_updates"] == 6
    assert "--max-update 6 --dropout 0.2 --seed 1" in record["command"]
    identity = json.loads((run_dir / "run.json").read_text())["identity"]
    assert identity["fairseq_train"][-11:-7] == ["--max-update", "6", "--dropout", "0.2"]
    saved = json.loads((tmp_path / "d" / "config.json").read_text())
    assert saved["extra_args"] == ["--max-update", "6", "--dropout", "0.2"]
    assert saved["archs"] == ["postln"] and saved["eval"] is None and saved["data"] == str(data_bin)
    # config.json is a configuration: loaded again, it names the same runs
    capsys.readouterr()
    assert cli("--config", tmp_path / "d" / "config.json", "--out", tmp_path / "d",
               "--train-command", " ".join(FAKE_TRAIN)) == 0
    assert "finished earlier" in capsys.readouterr().out


# ---------------------------------------------------------------------------- 2. signals, lock


def start_runner(out, data_bin, pidfile, seconds_per_update="0.05", nohup=False):
    env = dict(os.environ, FAKE_TRAIN_SECONDS_PER_UPDATE=seconds_per_update,
               FAKE_TRAIN_PIDFILE=str(pidfile), PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [sys.executable, "-m", "fairseq_rskip.tools.runner.cli", "--data", str(data_bin),
         "--out", str(out), "--archs", "postln", "--depths", "2", "--no-bleu",
         "--train-command", " ".join(FAKE_TRAIN), "--", "--max-update", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: start_as_a_terminal_would(nohup))


def start_as_a_terminal_would(nohup: bool) -> None:
    """The runner's signals as a terminal starts it: SIGINT and SIGTERM at their defaults
    (whatever the test process inherited), SIGHUP ignored under nohup."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_IGN if nohup else signal.SIG_DFL)


def wait_for(path, procs, timeout=120):
    deadline = time.time() + timeout
    while not (path.exists() and path.read_text()):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} not written"
        time.sleep(0.1)
    return int(path.read_text())


def gone(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/status").read_text().count("State:\tZ") == 1  # a zombie, not running


@pytest.mark.slow  # waits on signals to process trees
def test_signals_stop_the_trainer_and_a_second_runner_is_refused(data_bin, tmp_path):
    runners = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        out = tmp_path / sig.name
        runners[sig] = (out, start_runner(out, data_bin, tmp_path / f"{sig.name}.pid",
                                          nohup=sig == signal.SIGTERM))
    try:
        pids = {sig: wait_for(tmp_path / f"{sig.name}.pid", [p for _, p in runners.values()])
                for sig in runners}
        # a second runner on a folder a trainer writes into: refused, clearly
        out, _ = runners[signal.SIGTERM]
        second = start_runner(out, data_bin, tmp_path / "second.pid")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"error: run folder {out / 'runs' / 'postln-d2-s1'} is in use by another process" in err
        assert not (tmp_path / "second.pid").exists()  # it started no trainer
        # started under nohup, a runner goes on through SIGHUP
        nohup = runners[signal.SIGTERM][1]
        nohup.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert nohup.poll() is None and not gone(pids[signal.SIGTERM])
        for sig, (out, proc) in runners.items():
            proc.send_signal(sig)
        for sig, (out, proc) in runners.items():
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 128 + sig, err
            assert f"interrupted ({sig.name}); run the same command again to resume" in err
            assert "Traceback" not in err
            assert gone(pids[sig]), f"{sig.name}: the trainer {pids[sig]} still runs"
            run_dir = out / "runs" / "postln-d2-s1"
            attempt = json.loads((run_dir / "attempts.jsonl").read_text().splitlines()[-1])
            assert attempt["interrupted"] == sig.name and attempt["returncode"] == -signal.SIGTERM
            assert f"stopped by the runner ({sig.name})" in (run_dir / "train.log").read_text()
            assert not (run_dir / "result.json").exists()
    finally:
        for _, proc in runners.values():
            if proc.poll() is None:
                proc.kill()


# ---------------------------------------------------------------------------- 4. report


def test_a_diverged_run_says_where_and_no_target_means_no_target(data_bin, tmp_path):
    out = tmp_path / "out"
    cfg = config(variants={"boom": {"arch": "transformer{size}", "args": ["--lr", "1000"]}},
                 log_interval=2, train_args=["--max-update", "6"])
    lines = []
    rp.reproduce(cfg, out, data=data_bin, archs=["postln", "boom"], train_program=FAKE_TRAIN,
                 echo=lines.append)
    record = json.loads((out / "runs" / "boom-d2-s1" / "result.json").read_text())
    assert record["status"] == "diverged"
    # nan from update 3 on, logged at update 4: the last logged update with a finite loss is 2
    assert record["last_finite_update"] == 2 and record["diverged_at_update"] is None  # no crash.pt
    assert any("[boom-d2-s1] DIVERGED after update 2" in line for line in lines)
    md = (out / "results.md").read_text()
    assert "**diverged** after update 2 (the last logged with a finite loss)" in md
    assert "| boom | 2 | 1 | diverged after update 2 |" in md  # its row in the runs table
    assert "None" not in md and "<= None" not in md
    assert "no target validation loss set" in md


def test_report_of_a_crash_names_its_update(tmp_path):
    """fairseq's crash.pt (tests/test_reproduce.py trains a real one) gives the update."""
    class Cfg:
        name, description, target_valid_loss = "t", "", 4.0

    records = [{"arch": "a", "depth": 2, "seed": 1, "status": "diverged", "num_updates": 0,
                "message": "boom", "diverged_at_update": 3, "last_finite_update": 0,
                "valid_curve": []},
               # a record of the earlier runner, which did not say where
               {"arch": "a", "depth": 2, "seed": 2, "status": "diverged", "num_updates": 10,
                "message": "nan", "valid_curve": []}]
    write_tables(tmp_path, Cfg, records, ["a"])
    md = (tmp_path / "results.md").read_text()
    assert "**diverged** at update 3 (the last logged before it: 0): boom" in md
    assert "| a | 2 | 1 | diverged at update 3 |" in md
    assert "**diverged** after 10 updates: nan" in md and "| a | 2 | 2 | diverged |" in md
    runs = (tmp_path / "runs.csv").read_text().splitlines()
    assert runs[0].endswith(",diverged_at_update,last_finite_update,run") and ",3,0," in runs[1]
    assert "first validation with loss <= 4.0" in md

"""Live progress: what feeds the bars (fairseq-train's log as it is written), and that
nothing is drawn when stderr is not a terminal."""

import io

from fairseq_rskip.tools.runner import show_train_progress
from fairseq_rskip.tools.common.trainlog import LogFollower, TrainProgress, option_value
from fairseq_rskip.progress import progress_bar, write


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


# fairseq-train's own lines (fairseq 0.12.3.1, --log-format json), as the runner's log holds them
LOG = """\
2026-01-01 10:00:00 | INFO | fairseq_cli.train | num. shared model params: 1,234 (num. trained: 1,234)
2026-01-01 10:00:01 | INFO | fairseq.data.iterators | grouped total_num_itrs = 57
2026-01-01 10:00:01 | INFO | fairseq.trainer | begin training epoch 1
2026-01-01 10:00:05 | INFO | train_inner | {"epoch": 1, "update": 0.175, "loss": "9.812", "num_updates": "10", "wps": "4021.3"}
2026-01-01 10:00:09 | INFO | train_inner | {"epoch": 1, "update": 0.351, "loss": "9.104", "num_updates": "20", "wps": "4100.2"}
2026-01-01 10:00:10 | INFO | valid | {"epoch": 1, "valid_loss": "8.9", "valid_num_updates": "20"}
"""


def test_progress_from_max_update_and_latest_loss():
    p = TrainProgress.for_command(["fairseq-train", "data", "--max-update", "600", "--lr", "1e-3"])
    assert p.total == 600 and p.updates == 0 and p.loss is None
    for line in LOG.splitlines():
        p.feed(line)
    assert (p.updates, p.loss, p.valid_loss, p.epoch_updates) == (20, 9.104, 8.9, 57)
    assert p.total == 600


def test_progress_total_from_epochs_and_resume():
    p = TrainProgress.for_command(["fairseq-train", "--max-epoch=3"])
    assert p.total is None  # unknown until fairseq has counted an epoch's batches
    p.feed("2026 | INFO | fairseq.trainer | Loaded checkpoint ck/checkpoint_last.pt (epoch 2 @ 57 updates)")
    assert p.resumed_at == 57 and p.updates == 57
    for line in LOG.splitlines():
        p.feed(line)
    assert p.total == 3 * 57
    # with both limits fairseq stops at the first reached
    both = TrainProgress.for_command(["--max-epoch", "3", "--max-update", "100"])
    both.feed(LOG.splitlines()[1])
    assert both.total == 100
    assert option_value(["--max-update", "5", "--max-update=7"], "--max-update") == "7"


def test_log_follower_reads_complete_lines_as_they_are_written(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("an earlier attempt\n")
    follow = LogFollower(log)  # from the current end
    assert follow.new_lines() == []
    with open(log, "a") as f:
        f.write("line one\nline t")
        f.flush()
        assert follow.new_lines() == ["line one"]
        f.write("wo\n")
    assert follow.new_lines() == ["line two"]
    assert LogFollower(tmp_path / "not-yet").new_lines() == []


def test_bar_on_a_terminal_shows_updates_loss_and_eta():
    terminal = FakeTerminal()
    p = TrainProgress(max_update=600)
    with progress_bar(p.total, desc="rskip-d3-s1", unit="upd", file=terminal) as bar:
        for line in LOG.splitlines():
            p.feed(line)
        show_train_progress(bar, p)
        drawn = terminal.getvalue().split("\r")[-1]
    assert drawn.startswith("rskip-d3-s1:   3%") and "20/600 [" in drawn and "loss 9.104" in drawn
    assert "<" in drawn  # elapsed<remaining


def test_resumed_run_counts_from_its_checkpoint():
    terminal = FakeTerminal()
    p = TrainProgress(max_update=600)
    with progress_bar(p.total, desc="run", unit="upd", file=terminal) as bar:
        p.feed("x | INFO | fairseq.trainer | Loaded checkpoint c.pt (epoch 9 @ 500 updates)")
        show_train_progress(bar, p)
        assert (bar.n, bar.initial) == (500, 500)
        p.feed('x | INFO | train_inner | {"loss": "3.5", "num_updates": "510"}')
        show_train_progress(bar, p)
        assert bar.n == 510
    assert "510/600" in terminal.getvalue()


def test_nothing_is_drawn_when_stderr_is_not_a_terminal(capsys):
    pipe = io.StringIO()
    p = TrainProgress(max_update=600)
    with progress_bar(p.total, desc="run", file=pipe) as bar:
        for line in LOG.splitlines():
            p.feed(line)
        show_train_progress(bar, p)
    with progress_bar(10) as bar:  # default: the current stderr, here pytest's capture
        bar.update(5)
    assert pipe.getvalue() == ""
    write("one summary line")
    out, err = capsys.readouterr()
    assert out == "one summary line\n" and err == ""

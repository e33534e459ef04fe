"""rskip-reproduce without --config: the built-in recipe of --size (optimizer, criterion,
batch, budget, evaluation), the budget set on the command line."""

import csv
import json
from pathlib import Path

import pytest

from fairseq_rskip.tools.runner.config import Config
from fairseq_rskip.tools.runner.recipes import recipe_config
from fairseq_rskip.tools.runner import cli as reproduce_cli
from fairseq_rskip.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "translation" / "configs"
SAME = ("lr", "warmup_updates", "target_valid_loss", "log_interval", "eval")


def cli(*argv):
    return reproduce_cli.main([*map(str, argv)])


def planned_commands(printed: str) -> list:
    """The fairseq-train commands a --dry-run printed, one per run."""
    return [line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("[")]


def test_dry_run_without_config_prints_complete_commands(data_bin, tmp_path, capsys):
    assert cli("--archs", "postln", "rskip", "--size", "tiny", "--data", data_bin,
               "--out", tmp_path / "out", "--dry-run") == 0
    printed = capsys.readouterr().out
    recipe_lines = [line for line in printed.splitlines() if line.startswith("recipe:")]
    assert recipe_lines == [recipe_lines[0]]
    assert recipe_lines[0].startswith("recipe: the bundled demo's recipe, built in for --size tiny")
    commands = planned_commands(printed)
    assert len(commands) == 2
    assert "--arch transformer_tiny " in commands[0]
    assert "--arch transformer_rskip_tiny " in commands[1]
    for command in commands:
        for part in ("--optimizer adam", "--criterion label_smoothed_cross_entropy",
                     "--max-tokens 4096", "--max-update 600", "--lr 0.002",
                     "--lr-scheduler inverse_sqrt --warmup-updates 200", "--encoder-layers 3"):
            assert part in command


def test_the_budget_and_seeds_are_set_without_a_file(data_bin, tmp_path, capsys):
    assert cli("--archs", "rskip", "--data", data_bin, "--out", tmp_path / "out", "--dry-run",
               "--max-update", "20", "--seeds", "1", "2") == 0
    commands = planned_commands(capsys.readouterr().out)
    assert len(commands) == 2
    assert all("--max-update 20 " in c and "--max-update 600" not in c for c in commands)
    assert ["--seed 1 " in commands[0], "--seed 2 " in commands[1]] == [True, True]
    assert cli("--archs", "rskip", "--data", data_bin, "--out", tmp_path / "out2", "--dry-run",
               "--max-epoch", "3") == 0
    (command,) = planned_commands(capsys.readouterr().out)
    assert "--max-epoch 3 " in command
    assert "--max-update" not in command


def test_a_configuration_budget_is_replaced_in_either_spelling():
    cfg = Config(train_args=["--max-update=5", "--dropout", "0.1", "--max-epoch", "9"])
    assert cfg.with_budget(max_update=7).train_args == ["--dropout", "0.1", "--max-update", "7"]
    assert cfg.with_budget().train_args == cfg.train_args
    with pytest.raises(UserError, match="--max-epoch must be at least 1; got 0"):
        cfg.with_budget(max_epoch=0)


def test_the_paper_sizes_get_the_papers_recipes(data_bin, tmp_path, capsys):
    assert cli("--archs", "postln", "--size", "wmt_en_de", "--data", data_bin,
               "--out", tmp_path / "wmt", "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "recipe: WMT'14 En-De recipe (transformer_wmt_en_de)" in printed
    (command,) = planned_commands(printed)
    for part in ("--arch transformer_wmt_en_de ", "--share-all-embeddings", "--lr 0.0007",
                 "--warmup-updates 4000", "--adam-betas '(0.9, 0.98)'", "--dropout 0.1",
                 "--label-smoothing 0.1", "--max-tokens 4096", "--update-freq 8",
                 "--max-update 100000"):
        assert part in command
    big = recipe_config("vaswani_wmt_en_de_big")
    assert big.lr == 0.0005
    assert big.train_args[big.train_args.index("--dropout") + 1] == "0.3"
    assert big.train_args[big.train_args.index("--max-tokens") + 1] == "3584"
    assert big.eval["extra_args"] == ["--compound-split"]
    assert recipe_config("base").train_args == recipe_config("wmt_en_de").train_args
    with pytest.raises(UserError, match=r"no built-in recipe for --size nosuch: give --config"):
        cli("--archs", "postln", "--size", "nosuch", "--data", data_bin, "--out", tmp_path / "x")


def test_recipes_keep_the_example_configurations_settings():
    """The tiny recipe is the bundled demo's configuration; the IWSLT one the paper
    configuration's, but for its GPU-only options (--fp16, data-loading workers)."""
    demo, tiny = Config.load(CONFIGS / "bundled-demo.json"), recipe_config("tiny")
    assert [getattr(tiny, k) for k in (*SAME, "train_args", "depths", "size")] == \
        [getattr(demo, k) for k in (*SAME, "train_args", "depths", "size")]
    paper, iwslt = Config.load(CONFIGS / "iwslt14-paper-gpu.json"), recipe_config("iwslt_de_en")
    gpu_only = ["--fp16", "--num-workers", "2"]
    assert [getattr(iwslt, k) for k in SAME] == [getattr(paper, k) for k in SAME]
    assert iwslt.train_args == [a for a in paper.train_args if a not in gpu_only]


@pytest.mark.slow
def test_a_run_without_config_trains_evaluates_and_reports(data_bin, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli("--archs", "postln", "rskip", "--data", data_bin, "--out", out,
               "--max-update", "20", "--threads", "1") == 0
    assert "recipe: the bundled demo's recipe, built in for --size tiny" in capsys.readouterr().out
    rows = {r["arch"]: r for r in csv.DictReader((out / "runs.csv").open())}
    assert sorted(rows) == ["postln", "rskip"]
    for arch in ("postln", "rskip"):
        record = json.loads((out / "runs" / f"{arch}-d3-s1" / "result.json").read_text())
        assert record["status"] == "ok"
        assert 20 <= record["num_updates"] <= 21
        assert record["bleu"] is not None
    assert "rskip" in (out / "results.md").read_text()

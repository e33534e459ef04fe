"""Paired significance: sacreBLEU's tests on kept translations (the same p-values as
sacreBLEU's own command line), t-intervals over seeds, the runner's comparisons against the
reference rows, and ``rskip-evaluate --compare`` on files of translations."""

import csv
import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_rskip.tools import runner as rp
from fairseq_rskip.tools.common.intervals import t_interval
from fairseq_rskip.scoring import cli as evaluate_cli
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.tools.common.paired import PairedSettings, paired_tests, read_translations, write_translations

REPO = Path(__file__).resolve().parents[1]
SACREBLEU = Path(sys.executable).parent / "sacrebleu"
FAKE_TRAIN = [sys.executable, str(REPO / "tests" / "fake_fairseq_train.py")]
FAKE_EVALUATE = [sys.executable, str(REPO / "tests" / "fake_rskip_evaluate.py")]
WORDS = [f"w{i}" for i in range(40)]


def make_data_bin(folder: Path) -> Path:
    """What the runner checks of a data-bin: two dictionaries, train and valid splits."""
    folder.mkdir(parents=True)
    for lang in ("src", "tgt"):
        (folder / f"dict.{lang}.txt").write_text("w1 5\nw2 3\n")
        for split in ("train", "valid"):
            (folder / f"{split}.src-tgt.{lang}.idx").write_bytes(b"\0" * 16)
    return folder


def noisy(refs, p, seed):
    rng = random.Random(seed)
    return [" ".join(w if rng.random() > p else rng.choice(WORDS) for w in r.split()) for r in refs]


@pytest.fixture(scope="module")
def refs():
    rng = random.Random(1)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for _ in range(60)]


def sacrebleu_cli(ref, baseline, system, test, n, seed, metrics=("bleu",), fmt="json"):
    """sacreBLEU's own command line, paired test of SYSTEM against BASELINE."""
    flag = {"bs": ["--paired-bs", "--paired-bs-n", str(n)], "ar": ["--paired-ar", "--paired-ar-n", str(n)]}[test]
    proc = subprocess.run(
        [str(SACREBLEU), str(ref), "-i", str(baseline), str(system), *flag, "-m", *metrics, "-q",
         "-f", fmt, "--no-color"],
        capture_output=True, text=True, env={**os.environ, "SACREBLEU_SEED": str(seed)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout) if fmt == "json" else proc.stdout


def test_identical_systems_differ_in_nothing_and_the_references_differ_significantly(refs):
    settings = PairedSettings(paired_bs_n=200, paired_ar_n=500)
    base = noisy(refs, 0.4, seed=1)
    same = paired_tests(base, list(base), refs, settings)
    for metric in ("sacrebleu", "chrf"):
        m = same[metric]
        assert m["identical"] and m["delta"] == 0
        # sacreBLEU itself would say 1/(n + 1): no resample exceeds a zero difference
        assert m["bs"]["p"] == 1.0 and m["ar"]["p"] == 1.0
        assert m["bs"]["baseline_ci"] == m["bs"]["system_ci"]
    perfect = paired_tests(base, refs, refs, settings)
    for metric in ("sacrebleu", "chrf"):
        m = perfect[metric]
        assert m["system"] == pytest.approx(100.0) and m["delta"] > 10 and not m["identical"]
        assert m["bs"]["p"] < 0.05 and m["ar"]["p"] < 0.05
        low, high = m["bs"]["system_ci"]
        assert low <= m["bs"]["system_mean"] <= high
    # two systems of the same quality: no significant difference
    other = paired_tests(base, noisy(refs, 0.4, seed=2), refs, settings)
    assert other["sacrebleu"]["ar"]["p"] > 0.05 and not other["sacrebleu"]["identical"]
    with pytest.raises(UserError, match="the same test set"):
        paired_tests(base, base[:-1], refs, settings)


def test_t_interval():
    iv = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert iv["n"] == 3 and iv["mean"] == 2.0
    assert iv["low"] == pytest.approx(2.0 - half) and iv["high"] == pytest.approx(2.0 + half)
    assert t_interval([0.5]) == {"n": 1, "mean": 0.5, "low": None, "high": None}
    assert t_interval([None, float("nan")]) is None


def test_runner_compares_each_variant_with_its_reference_row(tmp_path):
    data = make_data_bin(tmp_path / "data-bin")
    out = tmp_path / "out"
    cfg = rp.Config(
        name="significance", size="tiny", depths=[2], seeds=[1, 2], lr=1e-3, warmup_updates=10,
        log_interval=1, train_args=["--max-update", "4"], eval={"beam": 1},
        variants={"fast": {"arch": "transformer_rskip{size}", "args": ["--lr", "0.002"]}},
        significance={"paired_bs_n": 300, "paired_ar_n": 700, "seed": 7},
    )
    lines = []
    rows = rp.reproduce(cfg, out, data=data, archs=["postln", "fast", "adanorm"],
                        train_program=FAKE_TRAIN, evaluate_command=FAKE_EVALUATE, echo=lines.append)
    runs = out / "runs"
    for key in ("postln-d2-s1", "fast-d2-s2"):
        assert (runs / key / "hyp.test.en").is_file() and (runs / key / "ref.test.en").is_file()
    by_arch = {row["arch"]: row for row in rows}
    assert " ± " in by_arch["fast"]["chrf"]
    results = {r["arch"]: r for r in csv.DictReader((out / "results.csv").read_text(encoding="utf-8").splitlines())}
    fast = results["fast"]
    assert (fast["vs"], fast["paired_seeds"]) == ("postln", "2")
    assert results["postln"]["vs"] == "" and results["adanorm"]["vs"] == ""
    # the valid-loss difference over the seeds, with its t-interval
    diffs = [json.loads((runs / f"fast-d2-s{s}" / "result.json").read_text())["best_valid_loss"]
             - json.loads((runs / f"postln-d2-s{s}" / "result.json").read_text())["best_valid_loss"]
             for s in (1, 2)]
    assert diffs[0] != diffs[1]
    iv = t_interval(diffs)
    assert fast["d_best_valid_loss"] == f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"
    # fast translates with 0.3 of the words wrong, postln with 0.5: significant on every seed
    for key in ("p_sacrebleu_bs", "p_sacrebleu_ar", "p_chrf_bs", "p_chrf_ar"):
        ps = [float(p) for p in fast[key].split("; ")]
        assert len(ps) == 2 and all(p < 0.05 for p in ps), key
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| chrF |" in md and "## Against the reference row" in md
    sentence = next(l for l in md.splitlines() if l.startswith("- fast vs postln, depth 2:"))
    assert f"best valid loss {fast['d_best_valid_loss'].replace('-', '−')} over 2 seeds" in sentence
    assert "paired bootstrap p = " in sentence and "(2 of 2 seeds significant at p < 0.05)" in sentence
    assert "approximate randomisation p = " in sentence and "chrF " in sentence
    assert "- adanorm: its reference row, preln, is not in this comparison" in md
    assert any(l.startswith("fast vs postln, depth 2:") for l in lines)
    assert (out / "paired_differences_d2.png").stat().st_size > 1000
    assert "![paired_differences_d2.png](paired_differences_d2.png)" in md
    per_seed = list(csv.DictReader((out / "comparisons.csv").read_text(encoding="utf-8").splitlines()))
    assert [(r["candidate"], r["baseline"], r["seed"]) for r in per_seed] == [
        ("fast", "postln", "1"), ("fast", "postln", "2")]

    # sacreBLEU's own command line on the kept files, same seed and resamples: the same p-values
    seed1 = json.loads((out / "comparisons.json").read_text())["comparisons"][0]["per_seed"][0]
    ref, base, system = runs / "postln-d2-s1" / "ref.test.en", runs / "postln-d2-s1" / "hyp.test.en", \
        runs / "fast-d2-s1" / "hyp.test.en"
    bs = sacrebleu_cli(ref, base, system, "bs", 300, 7)
    assert bs[1]["BLEU"]["p_value"] == seed1["tests"]["sacrebleu"]["bs"]["p"]
    assert bs[1]["BLEU"]["score"] == seed1["tests"]["sacrebleu"]["system"]
    mean, ci = bs[1]["BLEU"]["mean"], bs[1]["BLEU"]["ci"]
    assert seed1["tests"]["sacrebleu"]["bs"]["system_ci"] == pytest.approx([mean - ci, mean + ci])
    ar = sacrebleu_cli(ref, base, system, "ar", 700, 7, metrics=("bleu", "chrf"))
    assert ar[1]["BLEU"]["p_value"] == seed1["tests"]["sacrebleu"]["ar"]["p"]
    assert ar[1]["chrF2"]["p_value"] == seed1["tests"]["chrf"]["ar"]["p"]
    # (its JSON cannot hold chrF's bootstrap mean, a float32: the table, 4 decimals)
    table = sacrebleu_cli(ref, base, system, "bs", 300, 7, metrics=("chrf",), fmt="text")
    assert re.search(r"\(p = ([0-9.]+)\)", table).group(1) == f"{seed1['tests']['chrf']['bs']['p']:.4f}"

    # the report rebuilt: the tests kept in the run folder are reused, not run again
    kept = runs / "fast-d2-s1" / "significance-vs-postln-d2-s1.json"
    mtime = kept.stat().st_mtime_ns
    rp.reproduce(cfg, out, data=data, archs=["postln", "fast", "adanorm"], train_program=FAKE_TRAIN,
                 evaluate_command=FAKE_EVALUATE, echo=lines.append, report_only=True)
    assert kept.stat().st_mtime_ns == mtime
    assert (out / "results.md").read_text(encoding="utf-8") == md
    # other settings: run again
    cfg.significance = {"paired_bs_n": 301, "paired_ar_n": 700, "seed": 7}
    rp.reproduce(cfg, out, data=data, archs=["postln", "fast"], train_program=FAKE_TRAIN,
                 evaluate_command=FAKE_EVALUATE, echo=lines.append, report_only=True)
    assert json.loads(kept.read_text())["settings"]["paired_bs_n"] == 301

    # one seed: no interval, and the sentence says so
    cfg.seeds = [1]
    rp.reproduce(cfg, out, data=data, archs=["postln", "fast"], train_program=FAKE_TRAIN,
                 evaluate_command=FAKE_EVALUATE, echo=lines.append, report_only=True)
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "over 1 seed (one seed: no interval)" in md
    assert "(significant at p < 0.05)" in md


def test_bad_significance_settings_are_refused_before_training(tmp_path):
    data = make_data_bin(tmp_path / "data-bin")
    for spec, message in (({"paired_bs": 10}, r"unknown keys \['paired_bs'\]"),
                          ({"seed": 0}, "seed must be an integer >= 1; got 0 .sacreBLEU reads seed 0")):
        cfg = rp.Config(name="x", size="tiny", depths=[2], train_args=["--max-update", "2"], eval=None,
                        significance=spec)
        with pytest.raises(UserError, match=message):
            rp.reproduce(cfg, tmp_path / "out", data=data, archs=["postln"], train_program=FAKE_TRAIN)
        assert not (tmp_path / "out" / "runs").exists()


def test_evaluate_compares_two_files_of_translations(tmp_path, refs, capsys):
    ref, base, same = tmp_path / "ref.txt", tmp_path / "base.txt", tmp_path / "same.txt"
    write_translations(ref, refs)
    write_translations(base, noisy(refs, 0.4, seed=3))
    write_translations(same, read_translations(base))
    small = ["--paired-bs-n", "100", "--paired-ar-n", "200"]
    result = evaluate_cli.main(["--compare", str(base), str(same), "--references", str(ref), *small,
                                "--json-out", str(tmp_path / "c.json")])
    printed = capsys.readouterr().out
    assert "paired bootstrap p = 1.0000" in printed and "translations are identical" in printed
    assert json.loads((tmp_path / "c.json").read_text())["metrics"] == result["metrics"]
    result = evaluate_cli.main(["--compare", str(base), str(ref), "--references", str(ref), *small])
    assert all(m[t]["p"] < 0.05 for m in result["metrics"].values() for t in ("bs", "ar"))
    assert "signature BLEU: nrefs:1|bs:100|seed:12345|" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--compare", "A", "B"], "needs their references: give --references FILE"),
    (["--compare", "A", "missing.txt"], "--compare: missing.txt not found"),
    (["--compare", "A", "B", "--references", "A", "--paired-bs-n", "0"],
     "--paired-bs-n must be an integer >= 1; got 0"),
    (["--compare", "ckpt", "B"], "--compare translates ckpt .a checkpoint.: give --out DIR"),
    (["--compare", "A", "B", "--references", "A", "--generate-output", "A"],
     "--generate-output scores one system"),
])
def test_compare_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    Path("A").write_text("a b\n")
    Path("B").write_text("a c\n")
    Path("ckpt").mkdir()
    with pytest.raises(SystemExit) as exc:
        run_main(evaluate_cli.main, argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert re.search(message, err), err


def test_degenerate_translations_are_named_by_each_rule(refs):
    from fairseq_rskip.tools.common.degenerate import degenerate_reasons, is_repetitive

    assert degenerate_reasons(noisy(refs, 0.3, seed=4), refs, sacrebleu=30.0) == []
    assert degenerate_reasons(refs, refs, sacrebleu=0.5) == ["sacreBLEU 0.50 is below 1"]
    same = ["w1 w2 w3"] * 50 + refs[:10]
    assert degenerate_reasons(same, refs) == ["11 distinct translations of 60 sentences"]
    assert [is_repetitive(s) for s in ("", "a a b a", "a b c d", "indeindeinde", "indeinde x", "....")] \
        == [True, True, False, True, False, False]
    stuck = [f"w{i} " + "indeindeinde" for i in range(60)]
    assert degenerate_reasons(stuck, refs) == ["60 of 60 translations empty or one token repeated"]
    looping = [f"w{i} w{i} w{i} w{i} w{i} w{i + 1}" for i in range(60)]  # 4 of 6 tokens repeat one before
    reasons = degenerate_reasons(looping, ["a b c d e"] * 60)
    assert reasons == ["60 of 60 translations empty or one token repeated",
                       "67 % of the tokens repeat one of their sentence (references: 0 %)"]
    half = [f"w{i} x{i} y{i} w{i} x{i} y{i}" for i in range(60)]  # a weak model's repetition: 50 %
    assert degenerate_reasons(half, ["a b c d e f"] * 60) == []


def test_degenerate_runs_get_no_paired_test(tmp_path, capsys):
    """A run whose translations are one string for every sentence: named, with why, in the
    sentence and in rskip-evaluate --compare; no p-value is read, and "significant" is not said."""
    data = make_data_bin(tmp_path / "data-bin")
    out = tmp_path / "out"
    cfg = rp.Config(name="degenerate", size="tiny", depths=[2], seeds=[1], lr=1e-3, warmup_updates=10,
                    log_interval=1, train_args=["--max-update", "4"], eval={"beam": 1},
                    variants={"stuck": {"arch": "transformer_rskip{size}", "args": []}},
                    significance={"paired_bs_n": 100, "paired_ar_n": 100, "seed": 7})
    lines = []
    rp.reproduce(cfg, out, data=data, archs=["postln", "stuck"], train_program=FAKE_TRAIN,
                 evaluate_command=FAKE_EVALUATE, echo=lines.append)
    md = (out / "results.md").read_text(encoding="utf-8")
    from fairseq_rskip.tools.common.machine import machine_description, today
    from fairseq_rskip.tools.runner.report import provenance

    assert f"\nTrained on {today()} on {machine_description()}.\n" in md  # when and on what
    assert provenance([{"machine": "A", "trained_on": "2026-01-02"}, {"machine": "B", "trained_on": "2026-01-01"},
                       {}]) == ("Trained from 2026-01-01 to 2026-01-02 on A; B. 1 run recorded no date or "
                                "machine (trained by an earlier version).")
    sentence = next(l for l in lines if l.startswith("stuck vs postln"))
    assert "no paired tests where the translations are degenerate (stuck-d2-s1: " in sentence
    assert "1 distinct translation of 80 sentences" in sentence and "postln-d2-s1" not in sentence
    assert "significant" not in md and "gets no paired test" in md
    row = next(r for r in csv.DictReader((out / "results.csv").read_text(encoding="utf-8").splitlines()) if r["arch"] == "stuck")
    assert row["p_sacrebleu_bs"] == "n/a" and row["p_chrf_ar"] == "n/a"

    runs = out / "runs"
    evaluate_cli.main(["--compare", str(runs / "postln-d2-s1" / "hyp.test.en"),
                       str(runs / "stuck-d2-s1" / "hyp.test.en"), "--references",
                       str(runs / "postln-d2-s1" / "ref.test.en"), "--paired-bs-n", "50",
                       "--paired-ar-n", "50"])
    printed = capsys.readouterr().out
    assert "p = " not in printed and "significan" not in printed.replace("no significance", "")
    assert "degenerate translations, so no significance: system: " in printed


def test_a_built_in_recipe_warns_of_a_budget_that_ends_in_its_warm_up(tmp_path, capsys):
    from fairseq_rskip.tools.runner import cli as runner_cli

    data = make_data_bin(tmp_path / "data-bin")
    argv = ["--archs", "postln", "--size", "tiny", "--data", str(data), "--out", str(tmp_path / "o"),
            "--dry-run", "--max-update"]
    assert runner_cli.main(argv + ["20"]) == 0
    assert ("warning: --max-update 20 ends before the recipe's 200 warm-up updates: its models "
            "will not yet translate") in capsys.readouterr().err
    assert runner_cli.main(argv + ["600"]) == 0
    assert "warning" not in capsys.readouterr().err

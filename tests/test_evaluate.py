"""BLEU evaluation: scores checked against sacrebleu itself, the CLI contract, and a real end-to-end run."""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu

from fairseq_rskip.scoring import cli as evaluate_cli
from fairseq_rskip.data_prep import cli as prepare_cli
from fairseq_rskip.data_prep.bundled import CORPUS_DIR as CORPUS
from fairseq_rskip.fairseq_tools import PLUGIN_DIR, fairseq_executable
from fairseq_rskip.errors import UserError
from fairseq_rskip.scoring import bleu, evaluate

pytestmark = pytest.mark.slow  # stock fairseq commands end to end

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BIN = Path(sys.executable).parent

# Tokenised hypotheses and references (Moses-escaped, as fairseq-generate prints them after --remove-bpe),
# the same references untokenised, and the hypotheses as a Moses detokeniser must give them back.
HYPS = [
    "the cat sat on the mat .",
    "i don &apos;t think so , said the well-known man .",
    "we are going home today !",
    "this is a state-of-the-art method .",
]
REFS = [
    "the cat sat on the mat .",
    "i don &apos;t believe so , said the well-known man .",
    "we go home today !",
    "this is a very modern method .",
]
RAW_REFS = [
    "the cat sat on the mat.",
    "i don't believe so, said the well-known man.",
    "we go home today!",
    "this is a very modern method.",
]
DETOK_HYPS = [
    "the cat sat on the mat.",
    "i don't think so, said the well-known man.",
    "we are going home today!",
    "this is a state-of-the-art method.",
]


def test_scores_equal_sacrebleu_on_known_pair():
    res = bleu.score(HYPS, REFS, "en", raw_refs=RAW_REFS)
    assert res["detokenized_hypotheses"] == DETOK_HYPS
    tokenized = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", force=True)
    detok = sacrebleu.corpus_bleu(DETOK_HYPS, [RAW_REFS])
    assert res["bleu_tokenized"] == round(tokenized.score, 2)
    assert res["sacrebleu"] == round(detok.score, 2)
    chrf = sacrebleu.CHRF()
    assert res["chrf"] == round(chrf.corpus_score(DETOK_HYPS, [RAW_REFS]).score, 2)
    assert res["chrf_signature"] == str(chrf.get_signature()) and "nc:6|nw:0" in res["chrf_signature"]
    assert res["references"] == RAW_REFS
    assert 0 < res["sacrebleu"] < 100 and 0 < res["bleu_tokenized"] < 100
    sig = res["sacrebleu_signature"]
    assert sig.startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:") and sacrebleu.__version__ in sig
    assert "tok:none" in res["bleu_tokenized_signature"]
    # identical output scores 100 both ways; references default to the detokenised targets
    same = bleu.score(REFS, REFS, "en")
    assert same["bleu_tokenized"] == 100.0 and same["sacrebleu"] == 100.0


def test_compound_split_as_fairseq():
    # perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g'
    assert bleu.compound_split("a state-of-the-art method") == (
        "a state ##AT##-##AT## of ##AT##-##AT## the ##AT##-##AT## art method"
    )
    assert bleu.compound_split("a-b-c - x") == "a ##AT##-##AT## b-c - x"
    # like the perl, it also rewrites the tokeniser's @-@ (the same on both sides, so BLEU is consistent)
    assert bleu.compound_split("a @-@ b") == "a @ ##AT##-##AT## @ b"
    res = bleu.score(HYPS, REFS, "en", raw_refs=RAW_REFS, compound=True)
    split = sacrebleu.corpus_bleu(
        [bleu.compound_split(h) for h in HYPS], [[bleu.compound_split(r) for r in REFS]],
        tokenize="none", force=True,
    )
    assert res["bleu_tokenized"] == round(split.score, 2)
    assert res["bleu_tokenized"] != bleu.score(HYPS, REFS, "en", raw_refs=RAW_REFS)["bleu_tokenized"]
    # sacreBLEU is not affected by compound splitting
    assert res["sacrebleu"] == bleu.score(HYPS, REFS, "en", raw_refs=RAW_REFS)["sacrebleu"]


def fake_generate_output(path, hyps, refs, order):
    lines = []
    for i in order:
        lines += [f"S-{i}\tsource {i}", f"T-{i}\t{refs[i]}", f"H-{i}\t-0.5\t{hyps[i]}",
                  f"D-{i}\t-0.5\t{hyps[i]}", f"P-{i}\t-0.1 -0.2"]
    lines.append("Generate test with beam=5: BLEU4 = 0.00")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_evaluate_script_on_generate_output(tmp_path):
    data = tmp_path / "data-bin"
    data.mkdir()
    (data / "prep.json").write_text(json.dumps({"src_lang": "de", "tgt_lang": "en", "bpe": "subword_nmt"}))
    (data / "ref.test.en").write_text("".join(r + "\n" for r in RAW_REFS), encoding="utf-8")
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    (ckpt_dir / "checkpoint_best.pt").write_bytes(b"not used when scoring an existing output")
    gen = tmp_path / "generate-test.txt"
    fake_generate_output(gen, HYPS, REFS, order=[2, 0, 3, 1])
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "evaluate.sh"), "--data", str(data), "--checkpoint-dir", str(ckpt_dir),
         "--generate-output", str(gen), "--beam", "4", "--lenpen", "0.6"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith("BLEU ")
    record = json.loads((ckpt_dir / "eval_test.json").read_text())
    assert record["sacrebleu"] == round(sacrebleu.corpus_bleu(DETOK_HYPS, [RAW_REFS]).score, 2)
    assert record["bleu_tokenized"] == round(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="none", force=True).score, 2)
    sacre = sacrebleu.BLEU()
    sacre.corpus_score(DETOK_HYPS, [RAW_REFS])
    assert record["sacrebleu_signature"] == str(sacre.get_signature())
    assert record["checkpoint"] == str((ckpt_dir / "checkpoint_best.pt").resolve())
    # the translations scored, in the test set's order, and their references are kept beside
    assert (ckpt_dir / "hyp.test.en").read_text(encoding="utf-8").splitlines() == DETOK_HYPS
    assert (ckpt_dir / "ref.test.en").read_text(encoding="utf-8").splitlines() == RAW_REFS
    assert record["translations"] == str((ckpt_dir / "hyp.test.en").resolve())
    assert record["chrf"] == round(sacrebleu.corpus_chrf(DETOK_HYPS, [RAW_REFS]).score, 2)
    assert (record["subset"], record["beam"], record["lenpen"], record["num_sentences"]) == ("test", 4, 0.6, 4)
    assert f"tokenized={record['bleu_tokenized']:.2f}" in out[0] and f"sacrebleu={record['sacrebleu']:.2f}" in out[0]
    assert f"chrF={record['chrf']:.2f}" in out[0]


def test_generate_command_undoes_the_data_bins_bpe(tmp_path):
    args, extra = evaluate.build_parser().parse_known_args(
        ["--data", str(tmp_path), "--checkpoint", "c.pt", "--beam", "4", "--lenpen", "0.6", "--", "--batch-size", "7"])
    extra = [a for a in extra if a != "--"]
    for bpe, flags in (("subword_nmt", ["--remove-bpe"]), ("sentencepiece", ["--post-process", "sentencepiece"]),
                       ("none", [])):
        cmd = evaluate.generate_command(args, Path("c.pt"), {"bpe": bpe, "src_lang": "de", "tgt_lang": "en"}, extra)
        assert cmd[0] == fairseq_executable("fairseq-generate")
        assert cmd[-2:] == ["--batch-size", "7"]
        tail = cmd[cmd.index("en") + 1:-2]
        assert tail == flags
        for opt, val in (("--beam", "4"), ("--lenpen", "0.6"), ("--gen-subset", "test"), ("--path", "c.pt"),
                         ("--user-dir", str(PLUGIN_DIR))):
            assert cmd[cmd.index(opt) + 1] == val


def test_evaluate_errors(tmp_path):
    data = tmp_path / "data-bin"
    data.mkdir()
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    with pytest.raises(UserError, match="no checkpoint_best.pt or checkpoint_last.pt"):
        evaluate_cli.main(["--data", str(data), "--checkpoint-dir", str(ckpt_dir)])
    (ckpt_dir / "checkpoint1.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="--avg-last 3: .* holds 1 epoch checkpoints"):
        evaluate_cli.main(["--data", str(data), "--checkpoint-dir", str(ckpt_dir), "--avg-last", "3"])
    with pytest.raises(UserError, match="checkpoint not found"):
        evaluate_cli.main(["--data", str(data), "--checkpoint", str(ckpt_dir / "nope.pt")])
    empty = tmp_path / "gen.txt"
    empty.write_text("Generate test with beam=5\n")
    with pytest.raises(UserError, match="no hypotheses"):
        evaluate_cli.main(["--data", str(data), "--checkpoint", str(ckpt_dir / "checkpoint1.pt"),
                       "--generate-output", str(empty)])
    assert not (ckpt_dir / "eval_test.json").exists()


def corpus_lines(name, n):
    with gzip.open(CORPUS / name, "rt", encoding="utf-8") as f:
        return f.read().splitlines()[:n]


def test_end_to_end_train_average_evaluate(tmp_path):
    """Prepare a real (small) data-bin, train our architecture 2 epochs, evaluate.sh --avg-last 2."""
    raw = tmp_path / "raw"
    raw.mkdir()
    # 21 test sentences: not a multiple of fairseq's default batch multiple (8)
    for split, n in (("train", 400), ("valid", 20), ("test", 21)):
        for lang in ("de", "en"):
            (raw / f"{split}.{lang}").write_text(
                "".join(x + "\n" for x in corpus_lines(f"{split}.{lang}.gz", n)), encoding="utf-8")
    dest = tmp_path / "prep"
    databin = prepare_cli.main(["parallel",
        "--src-lang", "de", "--tgt-lang", "en", "--train-prefix", str(raw / "train"),
        "--valid-prefix", str(raw / "valid"), "--test-prefix", str(raw / "test"), "--dest", str(dest),
        "--bpe-size", "300", "--lowercase", "--joined-dictionary", "--workers", "1",
    ])
    ckpt = tmp_path / "ckpt"
    # one intra-op thread: on a shared 2-core machine torch's thread pool otherwise spins against other jobs
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    train = subprocess.run(
        [str(BIN / "fairseq-train"), str(databin), "--user-dir", str(PLUGIN_DIR),
         "--arch", "transformer_rskip_tiny", "--share-all-embeddings", "--optimizer", "adam",
         "--lr", "1e-3", "--max-tokens", "1000", "--max-epoch", "2", "--criterion",
         "label_smoothed_cross_entropy", "--label-smoothing", "0.1", "--save-dir", str(ckpt),
         "--num-workers", "0", "--seed", "1", "--no-progress-bar", "--cpu"],
        capture_output=True, text=True, env=env,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert (ckpt / "checkpoint1.pt").exists() and (ckpt / "checkpoint2.pt").exists()
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "evaluate.sh"), "--data", str(databin), "--checkpoint-dir", str(ckpt),
         "--avg-last", "2", "--beam", "2", "--max-tokens", "2000"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith("BLEU "), proc.stdout
    record = json.loads((ckpt / "eval_test.json").read_text())
    for key in ("bleu_tokenized", "sacrebleu", "sacrebleu_signature", "checkpoint", "subset", "beam",
                "lenpen", "num_sentences"):
        assert key in record
    assert record["num_sentences"] == 21 and record["avg_last"] == 2 and record["beam"] == 2
    assert record["checkpoint"] == str((ckpt / "checkpoint.avg2.pt").resolve())
    assert (ckpt / "checkpoint.avg2.pt").exists()
    # the record's scores are sacrebleu's on the generated text and the prepared references
    gen = Path(record["generate_output"])
    hyps, refs = bleu.parse_generate_output(gen)
    ids = sorted(hyps)
    assert ids == list(range(21))
    assert "@@" not in " ".join(hyps.values())
    assert [refs[i] for i in ids] == (dest / "text" / "test.en").read_text(encoding="utf-8").splitlines()
    tokenized = sacrebleu.corpus_bleu([hyps[i] for i in ids], [[refs[i] for i in ids]], tokenize="none", force=True)
    assert record["bleu_tokenized"] == round(tokenized.score, 2)
    # the translations kept (in --translations-dir) are what was scored
    kept = Path(record["translations"])
    assert kept.parent == ckpt and kept.name == "hyp.test.en"
    assert Path(record["generate_output"]).parent == ckpt
    detok = kept.read_text(encoding="utf-8").splitlines()
    raw_refs = Path(record["references_file"]).read_text(encoding="utf-8").splitlines()
    assert raw_refs == (Path(databin) / "ref.test.en").read_text(encoding="utf-8").splitlines()
    assert record["sacrebleu"] == round(sacrebleu.corpus_bleu(detok, [raw_refs]).score, 2)
    assert record["chrf"] == round(sacrebleu.corpus_chrf(detok, [raw_refs]).score, 2)

    # --compare: the same checkpoint twice is no difference; translations against the
    # references themselves are a significant one
    small = ["--paired-bs-n", "200", "--paired-ar-n", "500"]
    same = evaluate_cli.main(["--data", str(databin), "--compare", str(ckpt / "checkpoint.avg2.pt"),
                              str(ckpt / "checkpoint.avg2.pt"), "--out", str(tmp_path / "same"),
                              "--beam", "2", *small])
    for metric in same["metrics"].values():
        assert metric["identical"] and metric["delta"] == 0
        assert metric["bs"]["p"] == 1.0 and metric["ar"]["p"] == 1.0
    side = json.loads((tmp_path / "same" / "baseline" / "eval_test.json").read_text())
    assert side["sacrebleu"] == record["sacrebleu"] and side["chrf"] == record["chrf"]
    assert Path(side["translations"]).read_text(encoding="utf-8").splitlines() == detok
    assert json.loads((tmp_path / "same" / "comparison.json").read_text())["metrics"] == same["metrics"]
    against = evaluate_cli.main(["--compare", str(kept), record["references_file"],
                                 "--references", record["references_file"], *small])
    for metric in against["metrics"].values():
        assert metric["system"] == pytest.approx(100.0) and metric["delta"] > 0
        assert metric["bs"]["p"] < 0.05 and metric["ar"]["p"] < 0.05

    # an output that misses a sentence is refused, not scored on a part of the test set
    partial = tmp_path / "partial.txt"
    partial.write_text("".join(
        line + "\n" for line in gen.read_text(encoding="utf-8").splitlines()
        if not re.match(r"[STHDP]-7\t", line)), encoding="utf-8")
    with pytest.raises(UserError, match="translates 20 of the 21 sentences of test"):
        evaluate_cli.main(["--data", str(databin), "--checkpoint", str(ckpt / "checkpoint.avg2.pt"),
                       "--generate-output", str(partial), "--json-out", str(tmp_path / "partial.json")])

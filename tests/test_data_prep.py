"""Data preparation: formats, the generic pipeline, the benchmark recipes, bad input, re-runs.

All offline: the recipes run on small fixture archives in the real formats
(tests/fixtures, built into .tgz archives here), downloads on a local HTTP server.
"""

import gzip
import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from fairseq_rskip.data_prep import cli as prepare_cli
from fairseq_rskip.data_prep import bundled, datasets, download, pipeline
from fairseq_rskip.errors import UserError, run_main
from fairseq_rskip.data_prep.formats import pair_up, parse_segments, parse_tagged
from fairseq_rskip.data_prep.text import Tokenizer, keep_pair

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures"
SCRIPTS = REPO / "scripts"
CORPUS = bundled.CORPUS_DIR


def read(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def write_pair(prefix, src_lines, tgt_lines, s="de", t="en"):
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.{s}").write_text("".join(x + "\n" for x in src_lines), encoding="utf-8")
    Path(f"{prefix}.{t}").write_text("".join(x + "\n" for x in tgt_lines), encoding="utf-8")


def bundled_lines(name, n):
    with gzip.open(CORPUS / name, "rt", encoding="utf-8") as f:
        return f.read().splitlines()[:n]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A small real corpus (from the bundled one) as raw/{train,valid,test}.{de,en}."""
    root = tmp_path_factory.mktemp("raw")
    de, en = bundled_lines("train.de.gz", 300), bundled_lines("train.en.gz", 300)
    # one pair far outside the length ratio, one too long: both must be cleaned away
    de += ["Ja.", " ".join(["Wort"] * 40) + "."]
    en += ["Yes, that is absolutely and completely right, my dear old friend.", " ".join(["word"] * 40) + "."]
    write_pair(root / "train", de, en)
    write_pair(root / "valid", bundled_lines("valid.de.gz", 20), bundled_lines("valid.en.gz", 20))
    write_pair(root / "test", bundled_lines("test.de.gz", 20), bundled_lines("test.en.gz", 20))
    return root


def prep_args(raw, dest, *extra):
    return [
        "--src-lang", "de", "--tgt-lang", "en",
        "--train-prefix", str(raw / "train"), "--valid-prefix", str(raw / "valid"),
        "--test-prefix", str(raw / "test"), "--dest", str(dest), "--workers", "1", *extra,
    ]


def prepare_parallel(argv):
    """``rskip-prepare parallel ARGV``, in this process; returns the data-bin."""
    return prepare_cli.main(["parallel", *argv])


def run_script(name, *args, check=True, env=None):
    proc = subprocess.run(
        ["bash", str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
        env=dict(os.environ, **(env or {})),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in Path(folder).rglob("*") if p.is_file()}


def assert_no_finished_output(dest):
    """Nothing that looks finished: no data-bin and no stamp of the final step."""
    assert not (Path(dest) / "data-bin").exists()
    assert not (Path(dest) / ".stamps" / "binarize.json").exists()


# ------------------------------------------------------------------ formats
def test_parse_iwslt_xml_and_tags():
    segs = parse_segments(FIX / "iwslt14/de-en/IWSLT14.TED.dev2010.de-en.en.xml")
    assert segs[0] == "We are counting on every single one of you."
    # the recipes turn the right single quotation mark into an apostrophe
    assert segs[1].startswith("I've missed the bus")
    assert len(segs) == 3
    tags = parse_tagged(FIX / "iwslt14/de-en/train.tags.de-en.en")
    joined = "\n".join(tags)
    for dropped in ("<url>", "<talkid>", "<keywords>", "ted.com"):
        assert dropped not in joined
    # title and description lose their tags but stay, as in fairseq's recipe
    assert "Jane Doe: Talk 0" in tags and "TED Talk Subtitles and Transcript: A talk." in tags
    assert "<title>" not in joined and "<description>" not in joined


def test_parse_wmt_sgml():
    segs = parse_segments(FIX / "wmt14/test-full/newstest2014-deen-src.en.sgm")
    assert segs[-1] == "A well-known test's result."
    assert not any("<" in s for s in segs)
    assert len(segs) == len(parse_segments(FIX / "wmt14/test-full/newstest2014-deen-ref.de.sgm"))


def test_parse_errors(tmp_path):
    bad = tmp_path / "bad.sgm"
    bad.write_text('<srcset>\n<seg id="1">no end\n</srcset>\n', encoding="utf-8")
    with pytest.raises(UserError, match="malformed <seg>"):
        parse_segments(bad)
    plain = tmp_path / "plain.xml"
    plain.write_text("just text\n", encoding="utf-8")
    with pytest.raises(UserError, match="no <seg> elements"):
        parse_segments(plain)


def test_clean_rule_and_tokenizer():
    # clean-corpus-n.perl: lengths within [min, max] tokens and neither side more than ratio x the other
    assert keep_pair("a b c", "a b c d", 1.5, 1, 5)
    assert not keep_pair("a b", "a b c d", 1.5, 1, 5)
    assert not keep_pair("a b c d e f", "a b c d e f", 1.5, 1, 5)
    assert not keep_pair("", "a", 1.5, 1, 5)
    tok = Tokenizer("en", lowercase=True)
    assert tok("Don't   stop\u200b the \"state-of-the-art\" work!") == (
        "don't stop the \"state-of-the-art\" work!",
        "don &apos;t stop the &quot; state-of-the-art &quot; work !",
    )
    # a control character inside a line is a space (the words stay apart); format
    # characters (zero width space, soft hyphen) vanish
    assert tok("one\x0btwo\x0cthree\x85four\rfive\x1fsix")[0] == "one two three four five six"
    assert tok("Wort\u00adteil zero\u200bwidth")[0] == "wortteil zerowidth"
    aggressive = Tokenizer("en", aggressive_dash_splits=True, normalize_punct=True)
    # normalize-punctuation.perl for English also moves the full stop inside the quotes
    assert aggressive("A state-of-the-art \u201etest\u201c.")[1] == "A state @-@ of @-@ the @-@ art &quot; test . &quot;"


# ------------------------------------------------------------------ generic pipeline
def test_pipeline_subword_nmt(small_corpus, tmp_path):
    dest = tmp_path / "out"
    databin = prepare_parallel(prep_args(small_corpus, dest, "--bpe-size", "200", "--lowercase",
                                      "--joined-dictionary", "--clean-max-len", "30"))
    assert databin == dest / "data-bin"
    meta = json.loads((databin / "prep.json").read_text())
    assert meta["bpe"] == "subword_nmt" and meta["lowercase"] and meta["src_lang"] == "de"
    # training pairs cleaned by clean-corpus-n's rule (the two bad pairs among them), valid and test kept whole
    tok_de, tok_en = read(dest / "tok" / "train.de"), read(dest / "tok" / "train.en")
    expected = [(a, b) for a, b in zip(tok_de, tok_en) if keep_pair(a, b, 1.5, 1, 30)]
    assert len(expected) < 300
    assert list(zip(read(dest / "text" / "train.de"), read(dest / "text" / "train.en"))) == expected
    assert tok_de[-1].startswith("wort") and tok_de[-1] not in read(dest / "text" / "train.de")
    assert "ja ." not in read(dest / "text" / "train.de")
    assert meta["sentences"] == {"train": len(expected), "valid": 20, "test": 20}
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            assert (databin / f"{split}.de-en.{lang}.bin").stat().st_size > 0
    assert (databin / "dict.de.txt").read_text() == (databin / "dict.en.txt").read_text()
    # BPE codes: the requested number of merges
    codes = read(dest / "bpe" / "bpe.codes")
    assert codes[0].startswith("#version") and len(codes) - 1 == 200
    # tokenised, lowercased text; segmented text undoes to it
    tok = read(dest / "text" / "test.en")
    raw = bundled_lines("test.en.gz", 20)
    assert tok[0] == " ".join(tok[0].split()) and tok[0] == tok[0].lower()
    assert raw[0].rstrip(".").lower() in tok[0].replace(" .", "")
    seg = read(dest / "bpe" / "test.en")
    assert [s.replace("@@ ", "") for s in seg] == tok
    assert any("@@" in s for s in read(dest / "bpe" / "train.de"))
    # references for sacreBLEU: the untokenised, lowercased sentences
    assert read(databin / "ref.test.en") == [r.lower() for r in raw]


def test_pipeline_sentencepiece_and_bpe_size_errors(small_corpus, tmp_path):
    dest = tmp_path / "spm"
    prepare_parallel(prep_args(small_corpus, dest, "--bpe", "sentencepiece", "--bpe-size", "300"))
    assert (dest / "bpe" / "spm.model").exists()
    seg = read(dest / "bpe" / "train.en")
    assert all("\u2581" in s for s in seg[:10])
    assert "".join(seg[0].split()).replace("\u2581", " ").strip() == read(dest / "text" / "train.en")[0]
    meta = json.loads((dest / "data-bin" / "prep.json").read_text())
    assert meta["bpe"] == "sentencepiece" and meta["bpe_size"] == 300

    for bpe, size, pattern in (
        ("sentencepiece", 100000, r"BPE size 100000 is larger than this training text allows.*--bpe-size \d+"),
        ("sentencepiece", 10, r"BPE size 10 is too small"),
        ("subword_nmt", 100000, r"BPE size 100000 is larger than this training text allows.*--bpe-size \d+"),
    ):
        bad = tmp_path / f"bad-{bpe}-{size}"
        with pytest.raises(UserError, match=pattern):
            pipeline.run(pipeline.build_parser().parse_args(prep_args(small_corpus, bad, "--bpe", bpe, "--bpe-size", str(size))))
        assert_no_finished_output(bad)
        assert not list((bad / "bpe").glob("*.codes")) and not list((bad / "bpe").glob("*.model"))
        assert not (bad / ".stamps" / "bpe_learn.json").exists()


def test_rerun_reuses_and_option_change_redoes_only_later_steps(small_corpus, tmp_path):
    dest = tmp_path / "rerun"
    args = prep_args(small_corpus, dest, "--bpe-size", "100")
    prepare_parallel(args)
    before = mtimes(dest)
    prepare_parallel(args)
    assert mtimes(dest) == before, "a re-run with the same inputs must not rewrite anything"
    # a different BPE size keeps the tokenised text, redoes BPE and the data-bin
    prepare_parallel(prep_args(small_corpus, dest, "--bpe-size", "150"))
    after = mtimes(dest)
    assert after[dest / "tok" / "train.de"] == before[dest / "tok" / "train.de"]
    assert after[dest / "text" / "train.de"] == before[dest / "text" / "train.de"]
    assert after[dest / "bpe" / "bpe.codes"] != before[dest / "bpe" / "bpe.codes"]
    assert len(read(dest / "bpe" / "bpe.codes")) == 151
    assert json.loads((dest / "data-bin" / "prep.json").read_text())["bpe_size"] == 150
    # a changed input file redoes everything from the tokenisation on
    time.sleep(0.01)
    raw = small_corpus / "test.en"
    text = raw.read_text(encoding="utf-8")
    copy = tmp_path / "raw2"
    copy.mkdir()
    for f in small_corpus.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "test.en").write_text(text.replace("\n", " Extra.\n", 1), encoding="utf-8")
    prepare_parallel(prep_args(copy, dest, "--bpe-size", "150"))
    assert read(dest / "data-bin" / "ref.test.en")[0].endswith("Extra.")


def test_interrupted_step_leaves_nothing_finished(small_corpus, tmp_path, monkeypatch):
    dest = tmp_path / "interrupt"
    args = prep_args(small_corpus, dest, "--bpe-size", "100")
    real_apply = pipeline.bpe_mod.apply
    calls = []

    def failing_apply(kind, model, src, out, workers=1):
        calls.append(src)
        if len(calls) == 3:  # in the middle of the step: write part of a file, then die
            Path(out).write_text("half a line", encoding="utf-8")
            raise KeyboardInterrupt
        return real_apply(kind, model, src, out, workers)

    monkeypatch.setattr(pipeline.bpe_mod, "apply", failing_apply)
    with pytest.raises(KeyboardInterrupt):
        prepare_parallel(args)
    assert_no_finished_output(dest)
    assert not (dest / ".stamps" / "bpe_apply.json").exists()
    assert (dest / ".stamps" / "tokenize.json").exists()
    assert not list(dest.rglob(".partial-*")), "the interrupted file must not be left"
    monkeypatch.setattr(pipeline.bpe_mod, "apply", real_apply)
    tok_mtime = (dest / "tok" / "train.de").stat().st_mtime_ns
    prepare_parallel(args)
    assert (dest / "tok" / "train.de").stat().st_mtime_ns == tok_mtime, "finished steps are reused"
    assert (dest / "data-bin" / "prep.json").exists()


def test_killed_process_then_rerun(small_corpus, tmp_path):
    """SIGKILL the shell script in the middle of a run: nothing looks finished; a re-run completes."""
    big = tmp_path / "big"
    de, en = bundled_lines("train.de.gz", 4000), bundled_lines("train.en.gz", 4000)
    write_pair(big / "train", de, en)
    for split in ("valid", "test"):
        for lang in ("de", "en"):
            (big / f"{split}.{lang}").write_bytes((small_corpus / f"{split}.{lang}").read_bytes())
    dest = tmp_path / "killed"
    cmd = ["bash", str(SCRIPTS / "prepare-parallel.sh"), *prep_args(big, dest, "--bpe-size", "300")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed_in = None
    for line in proc.stderr:
        if "[tokenize] running" in line or "[bpe_learn] running" in line:
            killed_in = line
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert killed_in is not None and proc.returncode != 0
    assert_no_finished_output(dest)
    step = "tokenize" if "tokenize" in killed_in else "bpe_learn"
    assert not (dest / ".stamps" / f"{step}.json").exists()
    assert prepare_parallel(prep_args(big, dest, "--bpe-size", "300")) == dest / "data-bin"
    assert not list(dest.rglob(".partial-*"))
    meta = json.loads((dest / "data-bin" / "prep.json").read_text())
    assert meta["sentences"]["valid"] == 20


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("count", r"different line counts: .*train\.de has 4 lines, .*train\.en has 3"),
        ("empty", r"empty lines in parallel data: .*train\.en:2"),
        ("utf8", r"train\.de:3: not valid UTF-8 \(byte 0xff"),
        ("missing", r"missing train file .*train\.en"),
        ("cr", r"train\.de: its lines end in CR alone \(old Mac OS line breaks\)"),
        ("invisible", r"empty lines in parallel data: .*train\.en:2, .*train\.en:3"),
    ],
)
def test_bad_input_clear_error_and_no_output(tmp_path, capsys, case, pattern):
    raw = tmp_path / "raw"
    src = ["Das ist gut.", "Ich bin hier.", "Wir gehen.", "Sie kommt."]
    tgt = ["That is good.", "I am here.", "We go.", "She comes."]
    write_pair(raw / "train", src, tgt)
    write_pair(raw / "valid", src[:2], tgt[:2])
    write_pair(raw / "test", src[:2], tgt[:2])
    if case == "count":
        write_pair(raw / "train", src, tgt[:3])
    elif case == "empty":
        write_pair(raw / "train", src, [tgt[0], "  ", *tgt[2:]])
    elif case == "utf8":
        data = (raw / "train.de").read_bytes().replace("Wir".encode(), b"W\xffr")
        (raw / "train.de").write_bytes(data)
    elif case == "missing":
        (raw / "train.en").unlink()
    elif case == "cr":  # old-Mac line breaks: read by LF, one line of four glued sentences
        (raw / "train.de").write_bytes("".join(x + "\r" for x in src).encode())
    elif case == "invisible":  # nothing visible: zero width space, word joiner, BOM
        write_pair(raw / "train", src, [tgt[0], "\u200b", " \u2060\ufeff ", tgt[3]])
    dest = tmp_path / "out"
    if case == "count":  # through the shell entry point: exit status 2, one error line, no traceback
        proc = run_script("prepare-parallel.sh", *prep_args(raw, dest, "--bpe-size", "10"), check=False)
        returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        with pytest.raises(SystemExit) as exc:
            run_main(prepare_cli.main, ["parallel", *prep_args(raw, dest, "--bpe-size", "10")])
        returncode = exc.value.code
        stdout, stderr = capsys.readouterr()
    assert returncode == 2
    assert stdout == ""
    assert "Traceback" not in stderr
    err = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(err) == 1, stderr[-2000:]
    assert re.search(pattern, err[0]), err[0]
    assert_no_finished_output(dest)
    assert not (dest / ".stamps" / "tokenize.json").exists()


def test_blank_pairs_of_a_recipe_are_dropped():
    pairs, dropped = pair_up(["Ja.", "\u200b", "Nein."], ["Yes.", "Well.", "\u200c\u200d"], "t")
    assert pairs == [("Ja.", "Yes.")] and dropped == 2


HOLD_LOCK = """
import os, sys, time
from filelock import FileLock
os.makedirs(sys.argv[1], exist_ok=True)
with FileLock(os.path.join(sys.argv[1], ".lock")):  # what fairseq_rskip.file_io.locked holds
    print("holding", flush=True)
    time.sleep(120)
"""

# every prepare command, with a --dest; the refusals come before any input is read
PREPARE_COMMANDS = {
    "parallel": ["--src-lang", "de", "--tgt-lang", "en", "--train-prefix", "raw/train",
                 "--valid-prefix", "raw/valid", "--test-prefix", "raw/test"],
    "bundled": [],
    "iwslt14": ["--archive-dir", "nowhere"],
    "iwslt15-envi": ["--archive-dir", "nowhere"],
    "wmt14-en2de": ["--archive-dir", "nowhere"],
}


def prepare_error(capsys, name, dest):
    with pytest.raises(SystemExit) as exc:
        run_main(prepare_cli.main, [name, *PREPARE_COMMANDS[name], "--dest", str(dest)])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_dest_in_use_or_a_file_is_refused_by_every_prepare_command(tmp_path, capsys):
    dest = tmp_path / "dest"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(dest)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for name in PREPARE_COMMANDS:
            assert prepare_error(capsys, name, dest).startswith(
                f"error: --dest {dest} is in use by another process"), name
        # the shell wrapper: the same line, exit status 2
        proc = run_script("prepare-bundled.sh", dest, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"error: --dest {dest} is in use by another process" in proc.stderr
        assert sorted(p.name for p in dest.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    for name in PREPARE_COMMANDS:
        assert prepare_error(capsys, name, afile) == (
            f"error: --dest {afile} is a file, not a folder: give a folder (it is made if it does "
            "not exist)"), name
        assert prepare_error(capsys, name, afile / "sub").startswith(
            f"error: cannot make --dest {afile / 'sub'}: "), name
    assert afile.read_text() == "not a folder\n"


# ------------------------------------------------------------------ downloads
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges = []

    def do_GET(self):  # noqa: N802
        data = self.payload
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _RangeHandler.payload = os.urandom(300_000)
    _RangeHandler.ranges = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/data.tgz", _RangeHandler
    server.shutdown()
    server.server_close()


def test_download_resumes_and_verifies(http_server, tmp_path):
    url, handler = http_server
    sha = hashlib.sha256(handler.payload).hexdigest()
    dest = tmp_path / "dl" / "data.tgz"
    dest.parent.mkdir()
    # an interrupted earlier download left the first 100 kB
    (dest.parent / "data.tgz.part").write_bytes(handler.payload[:100_000])
    path = download.fetch([url], dest, sha256=sha)
    assert path == dest and dest.read_bytes() == handler.payload
    assert handler.ranges == ["bytes=100000-"]
    assert not (dest.parent / "data.tgz.part").exists()
    # a second call reuses the verified file
    download.fetch([url], dest, sha256=sha)
    assert handler.ranges == ["bytes=100000-"]


def test_download_checksum_mismatch(http_server, tmp_path):
    url, handler = http_server
    dest = tmp_path / "data.tgz"
    with pytest.raises(UserError, match="checksum mismatch for .*expected md5 0+, got"):
        download.fetch([url], dest, md5="0" * 32)
    assert not dest.exists() and not (tmp_path / "data.tgz.part").exists()


def test_download_trust_on_first_use(http_server, tmp_path):
    url, handler = http_server
    dest = tmp_path / "data.tgz"
    download.fetch([url], dest)
    recorded = (tmp_path / "data.tgz.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(handler.payload).hexdigest()
    dest.write_bytes(b"tampered")
    with pytest.raises(UserError, match="changed since first use"):
        download.fetch([url], dest)


def test_archive_dir_missing_and_bad_checksum(tmp_path):
    offline = tmp_path / "offline"
    offline.mkdir()
    with pytest.raises(UserError, match=r"missing archive: .*test-full\.tgz not found"):
        download.fetch(["https://example.invalid/test-full.tgz"], tmp_path / "d" / "test-full.tgz",
                       md5="a" * 32, archive_dir=offline)
    (offline / "test-full.tgz").write_bytes(b"not the archive")
    with pytest.raises(UserError, match="checksum mismatch"):
        download.fetch(["https://example.invalid/test-full.tgz"], tmp_path / "d" / "test-full.tgz",
                       md5="a" * 32, archive_dir=offline)
    # the command-line entry point reports it as an error line, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_rskip.data_prep.cli", "download", "--url", "https://example.invalid/x.tgz",
         "--dest", str(tmp_path / "x.tgz"), "--archive-dir", str(offline)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2 and "error: missing archive" in proc.stderr and "Traceback" not in proc.stderr



@pytest.mark.parametrize("name", ["iwslt14", "wmt14-en2de"])
def test_a_failed_download_names_archive_dir_and_the_files_it_expects(tmp_path, capsys, monkeypatch, name):
    """Without network, rskip-prepare's one error line says how to prepare offline: every
    archive of the recipe, where to fetch it, and --archive-dir."""
    def unreachable(url, part, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(download, "_http_download", unreachable)
    with pytest.raises(SystemExit) as exc:
        run_main(prepare_cli.main, [name, "--dest", str(tmp_path / "dest")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: could not download ")
    assert "Network is unreachable" in err[0] and "give it as --archive-dir DIR" in err[0]
    for archive in datasets.RECIPES[name.replace("-", "_")][0]["archives"]:
        assert f"{archive.name} ({archive.urls[0]})" in err[0]
    with pytest.raises(download.DownloadError, match=r"give --archive-dir DIR, the folder that holds x\.tgz"):
        download.fetch(["https://example.invalid/x.tgz"], tmp_path / "x.tgz", retries=1)

# ------------------------------------------------------------------ benchmark recipes, offline
def make_tgz(out, files):
    """A .tgz holding ``{arcname: path}``, laid out as the real archive."""
    with tarfile.open(out, "w:gz") as tar:
        for arcname, path in files.items():
            tar.add(path, arcname=arcname)
    return out


@pytest.fixture(scope="module")
def iwslt14_prepared(tmp_path_factory):
    archives = tmp_path_factory.mktemp("iwslt-archives")
    src = FIX / "iwslt14" / "de-en"
    make_tgz(archives / "de-en.tgz", {f"de-en/{p.name}": p for p in sorted(src.iterdir())})
    dest = tmp_path_factory.mktemp("iwslt14")
    proc = run_script("prepare-iwslt14.sh", "--dest", dest, "--archive-dir", archives,
                      "--bpe-size", "150", "--workers", "1")
    return dest, archives, proc


def test_iwslt14_recipe(iwslt14_prepared):
    dest, archives, proc = iwslt14_prepared
    assert proc.stdout.strip() == str(dest / "data-bin")
    # no published checksum: the first use recorded one
    assert (dest / "orig" / "de-en.tgz.sha256").exists()
    raw_train = read(dest / "raw" / "train.en")
    for tag in ("<url>", "<talkid>", "<keywords>", "<title>", "<description>"):
        assert not any(tag in line for line in raw_train)
    assert "Jane Doe: Talk 1" in raw_train
    assert "<speaker>Jane Doe</speaker>" in raw_train  # fairseq's recipe keeps the other tag lines
    assert "Lost line." not in raw_train  # its German side was empty: dropped with it
    # test = dev2010 + TEDX dev2012 + tst2010 + tst2011 + tst2012, in that order
    test = read(dest / "raw" / "test.en")
    expected = []
    for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
        expected += parse_segments(FIX / f"iwslt14/de-en/IWSLT14.{name}.de-en.en.xml")
    assert test == expected
    # cleaned (the 1-vs-11-token pair is gone), lowercased, tokenised; valid = every 23rd cleaned pair
    text_train, text_valid = read(dest / "text" / "train.en"), read(dest / "text" / "valid.en")
    kept = len(text_train) + len(text_valid)
    assert len(raw_train) - 10 < kept < len(raw_train)
    assert len(text_valid) == kept // 23
    tok_train = read(dest / "tok" / "train.en")
    assert text_valid == [line for line in tok_train if line in text_valid][: len(text_valid)]
    assert all(line == line.lower() for line in text_train)
    assert "yes , that is absolutely and completely right , my dear friend ." not in text_train + text_valid
    meta = json.loads((dest / "data-bin" / "prep.json").read_text())
    assert meta["lowercase"] and meta["sentences"]["test"] == 15
    assert len(read(dest / "data-bin" / "ref.test.en")) == 15


def test_iwslt14_rerun_and_changed_archive(iwslt14_prepared, tmp_path):
    dest, archives, _ = iwslt14_prepared
    before = mtimes(dest)
    prepare_cli.main(["iwslt14", "--dest", str(dest), "--archive-dir", str(archives), "--bpe-size", "150", "--workers", "1"])
    assert mtimes(dest) == before
    # an archive that differs from the one first used is refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "de-en.tgz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(UserError, match="checksum mismatch .*changed since first use"):
        prepare_cli.main(["iwslt14", "--dest", str(dest), "--archive-dir", str(other)])
    assert mtimes(dest) == before


def test_iwslt15_envi_recipe(tmp_path):
    dest = tmp_path / "envi"
    prepare_cli.main(["iwslt15-envi", "--dest", str(dest), "--archive-dir", str(FIX / "iwslt15-envi"), "--workers", "1"])
    meta = json.loads((dest / "data-bin" / "prep.json").read_text())
    assert meta["bpe"] == "none" and meta["tokenizer"] == "none" and meta["src_lang"] == "en"
    assert meta["sentences"] == {"train": 40, "valid": 4, "test": 5}
    # the release's tokenisation is kept for training ...
    assert read(dest / "text" / "valid.en")[2] == "It &apos;s a beautiful day ."
    # ... and undone for the sacreBLEU references
    assert read(dest / "data-bin" / "ref.valid.vi")[0] == "Tôi là sinh viên."
    words = {w for line in read(dest / "data-bin" / "dict.vi.txt") for w in [line.split()[0]]}
    assert "viên" in words  # word level, no BPE


def test_wmt14_recipe(tmp_path, monkeypatch):
    archives = tmp_path / "archives"
    archives.mkdir()
    root = FIX / "wmt14"
    layout = {
        "training-parallel-europarl-v7.tgz": ["training/europarl-v7.de-en.de", "training/europarl-v7.de-en.en"],
        "training-parallel-commoncrawl.tgz": ["commoncrawl.de-en.de", "commoncrawl.de-en.en"],
        "training-parallel-nc-v9.tgz": ["training/news-commentary-v9.de-en.de", "training/news-commentary-v9.de-en.en"],
        "test.tgz": ["test/newstest2013-src.de.sgm", "test/newstest2013-src.en.sgm"],
        "test-full.tgz": ["test-full/newstest2014-deen-src.en.sgm", "test-full/newstest2014-deen-ref.de.sgm"],
    }
    sums = {}
    for name, members in layout.items():
        make_tgz(archives / name, {m: root / m for m in members})
        sums[name] = hashlib.md5((archives / name).read_bytes()).hexdigest()
    # the recipe's published checksums belong to the real archives: check these against their own
    fixture_archives = [datasets.Archive(a.name, a.urls, md5=sums[a.name]) for a in datasets.WMT14_EN2DE["archives"]]
    monkeypatch.setitem(datasets.WMT14_EN2DE, "archives", fixture_archives)
    dest = tmp_path / "wmt"
    prepare_cli.main(["wmt14-en2de", "--dest", str(dest), "--archive-dir", str(archives), "--bpe-size", "200",
                   "--workers", "1"])
    meta = json.loads((dest / "data-bin" / "prep.json").read_text())
    assert (meta["src_lang"], meta["tgt_lang"]) == ("en", "de")
    assert meta["joined_dictionary"] and meta["aggressive_dash_splits"] and meta["normalize_punct"]
    # three corpora, less Europarl's empty pair
    assert len(read(dest / "raw" / "train.en")) == 91
    assert "This is a state @-@ of @-@ the @-@ art method ." in read(dest / "tok" / "train.en")
    assert read(dest / "raw" / "valid.de") == parse_segments(root / "test/newstest2013-src.de.sgm")
    assert read(dest / "raw" / "test.en")[-1] == "A well-known test's result."
    assert read(dest / "raw" / "test.de") == parse_segments(root / "test-full/newstest2014-deen-ref.de.sgm")
    assert read(dest / "data-bin" / "ref.test.de")[-1] == "Das Ergebnis eines bekannten Tests."
    # the published checksums are still what a real run checks
    monkeypatch.undo()
    with pytest.raises(UserError, match="checksum mismatch"):
        prepare_cli.main(["wmt14-en2de", "--dest", str(dest), "--archive-dir", str(archives)])


# ------------------------------------------------------------------ bundled corpus
def test_bundled_corpus_files_and_license():
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    assert manifest["source"]["debian_package"] == "trans-de-en"
    assert manifest["source"]["license"] == "GPL-2.0-or-later"
    assert "GNU GENERAL PUBLIC LICENSE" in (CORPUS / "LICENSE").read_text()
    assert "trans-de-en" in (CORPUS / "README.md").read_text()
    total = 0
    for split, n in manifest["sentences"].items():
        de, en = bundled_lines(f"{split}.de.gz", 10**6), bundled_lines(f"{split}.en.gz", 10**6)
        assert len(de) == len(en) == n
        assert all(d.strip() and e.strip() for d, e in zip(de, en))
        total += sum((CORPUS / f"{split}.{l}.gz").stat().st_size for l in ("de", "en"))
    assert total < 3_000_000
    # no sentence of the test set is in the training set
    train = set(bundled_lines("train.de.gz", 10**6))
    assert not train & set(bundled_lines("test.de.gz", 10**6))


def test_bundled_extraction_rules():
    lines = [
        "# License :: GPL",
        "Hund {m} | Der Hund bellt laut. | Hunde {pl} :: dog | The dog barks loudly. | dogs",
        "gehen {vi} | Wir gehen nach Hause.; Wir gehen heim. :: to go | We are going home.; We go home.",
        "Zeit {f} | Ich habe keine Zeit (mehr). :: time | I have no time (left).",
        "sagen | Er sagt etw. zu jdm. :: to say | He says sth. to sb.",
        "kurz | Ja. :: short | Yes.",
        "ungleich | Eins. | Zwei drei vier. :: unequal",
        "Haus | Der Hund bellt laut. :: house | The dog barks very loudly.",
    ]
    entries = bundled.extract_pairs(lines)
    assert entries == [
        [("Der Hund bellt laut.", "The dog barks loudly.")],
        [("Wir gehen nach Hause.", "We are going home.")],
    ]
    splits = bundled.split_entries([[("a", "b")]] * 10, seed=1, test_size=2, valid_size=3)
    assert [len(splits[k]) for k in ("test", "valid", "train")] == [2, 3, 5]


# rskip-prepare bundled and scripts/prepare-bundled.sh: tests/test_entry_points.py

"""The bundled German-English corpus: preparing it, and building it from Ding's dictionary.

The corpus ships inside the package (:data:`CORPUS_DIR`,
``fairseq_rskip/corpus/ding-de-en``), so ``rskip-prepare bundled`` works
from any directory, installed or in a checkout: :func:`prepare` decompresses
it into ``DEST/raw`` and runs the generic pipeline with :data:`PIPELINE`.

Ding (Frank Richter, TU Chemnitz, GPL-2+) is a German-English dictionary whose
entries carry example sentences translated by its editors. :func:`build`
keeps the entries' full-sentence examples as a small sentence-aligned corpus
(``rskip-prepare build-bundled-corpus [trans-de-en_1.9-6_all.deb]`` fetches
the package with ``apt-get download`` unless given one).

Extraction, all deterministic:

1. Read ``usr/share/trans/de-en`` from the package (an ar archive holding
   ``data.tar.*``). Each line is ``German :: English``; each side holds
   sub-entries separated by `` | `` that correspond one to one, and each
   sub-entry holds alternatives separated by ``; ``.
2. For every line whose two sides have the same number of sub-entries, pair
   the first alternative of each sub-entry.
3. Keep a pair only if both sides are sentences: start with an upper-case
   letter or digit, end with ``.``, ``?`` or ``!`` (optionally a closing
   quote), have 3 to 30 words, and carry none of Ding's annotations or
   placeholders (``{}``, ``[]``, ``<>``, ``()``, ``/``, ``|``, ellipses,
   ``sb.``/``sth.``/``jdn.``/``jdm.``/``etw.``).
4. Drop a pair whose German or English side was already kept (first wins).
5. Split by dictionary entry (so examples of one head word stay in one split):
   shuffle the entries with ``random.Random(SEED)``, fill test, then valid,
   then train.
"""

import gzip
import io
import random
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from fairseq_rskip.data_prep import pipeline
from fairseq_rskip.data_prep.common import logger
from fairseq_rskip.data_prep.download import verify
from fairseq_rskip.errors import UserError
from fairseq_rskip.fairseq_tools import PLUGIN_DIR
from fairseq_rskip.file_io import atomic_output, locked, write_json

CORPUS_DIR = PLUGIN_DIR / "corpus" / "ding-de-en"
# the generic recipe: Moses tokenisation, lowercased, joint subword-nmt BPE of 4000 merges,
# joined dictionary; options given after these override them
PIPELINE = ["--src-lang", "de", "--tgt-lang", "en", "--bpe", "subword_nmt", "--bpe-size", "4000",
            "--lowercase", "--joined-dictionary", "--clean-max-len", "175", "--normalize-punct"]

PACKAGE = "trans-de-en"
VERSION = "1.9-6"
DEB_SHA256 = "45f6b4cf1c434776fba6811d7bc522efabb5425c43ba8afd0e289bf9e2e53df4"
MEMBER = "usr/share/trans/de-en"
SEED = 1234
TEST_SIZE = 1000
VALID_SIZE = 500
MIN_WORDS, MAX_WORDS = 3, 30

_ANNOTATION = re.compile(r"[{}\[\]<>()/…|]|\.\.\.|\b(sb|sth|jdn|jdm|etw|jds)\.|\bsb\b|\bsth\b")
_SENTENCE_END = re.compile(r"[.?!][\"“”»«’']?$")


def read_deb_member(deb_path, member):
    """Return the bytes of ``member`` from the data tarball of a Debian package (no dpkg needed)."""
    data = Path(deb_path).read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise UserError(f"{deb_path} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                for m in tar.getmembers():
                    if m.name.lstrip("./") == member:
                        return tar.extractfile(m).read()
            raise UserError(f"{member} not found in {deb_path}")
    raise UserError(f"no data.tar member in {deb_path}")


def is_sentence(text):
    if _ANNOTATION.search(text) or not _SENTENCE_END.search(text):
        return False
    if not (text[0].isupper() or text[0].isdigit()):
        return False
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


def extract_pairs(lines):
    """Return a list of entries, each a list of (German, English) sentence pairs (steps 2-4)."""
    entries = []
    seen_de, seen_en = set(), set()
    for line in lines:
        if line.startswith("#") or " :: " not in line:
            continue
        de, en = line.rstrip("\n").split(" :: ", 1)
        de_parts, en_parts = de.split(" | "), en.split(" | ")
        if len(de_parts) != len(en_parts):
            continue
        kept = []
        for d, e in zip(de_parts, en_parts):
            d, e = d.split("; ")[0].strip(), e.split("; ")[0].strip()
            if not (d and e and is_sentence(d) and is_sentence(e)):
                continue
            if d in seen_de or e in seen_en:
                continue
            seen_de.add(d)
            seen_en.add(e)
            kept.append((d, e))
        if kept:
            entries.append(kept)
    return entries


def split_entries(entries, seed=SEED, test_size=TEST_SIZE, valid_size=VALID_SIZE):
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    splits = {"test": [], "valid": [], "train": []}
    for i in order:
        if len(splits["test"]) < test_size:
            name = "test"
        elif len(splits["valid"]) < valid_size:
            name = "valid"
        else:
            name = "train"
        splits[name].extend(entries[i])
    return splits


def write_gz(path, lines):
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write("".join(line + "\n" for line in lines).encode("utf-8"))


def download_deb(folder):
    """Fetch the Debian package with ``apt-get download`` into ``folder``; returns its path."""
    name = f"{PACKAGE}={VERSION}"
    try:
        proc = subprocess.run(["apt-get", "download", name], cwd=folder, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"apt-get not found: give the package, PATH/{PACKAGE}_{VERSION}_all.deb") from None
    if proc.returncode != 0:
        raise UserError(f"apt-get download {name} failed (Debian 12 package lists needed; or give "
                        f"the package, PATH/{PACKAGE}_{VERSION}_all.deb):\n{proc.stderr[-2000:]}")
    return Path(folder) / f"{PACKAGE}_{VERSION}_all.deb"


def build(deb_path, out_dir=CORPUS_DIR):
    verify(deb_path, sha256=DEB_SHA256, what=f"{PACKAGE}_{VERSION}_all.deb")
    text = read_deb_member(deb_path, MEMBER).decode("utf-8")
    entries = extract_pairs(text.splitlines())
    splits = split_entries(entries)
    out_dir = Path(out_dir)
    stats = {}
    for name, pairs in splits.items():
        write_gz(out_dir / f"{name}.de.gz", [d for d, _ in pairs])
        write_gz(out_dir / f"{name}.en.gz", [e for _, e in pairs])
        stats[name] = len(pairs)
    manifest = {
        "source": {"debian_package": PACKAGE, "version": VERSION, "source_package": "ding",
                   "sha256": DEB_SHA256, "file": MEMBER, "license": "GPL-2.0-or-later"},
        "seed": SEED,
        "sentences": stats,
        "entries": len(entries),
    }
    write_json(out_dir / "manifest.json", manifest)
    logger.info("wrote %s: %s", out_dir, stats)
    return stats


def prepare(dest, corpus_dir=CORPUS_DIR, pipeline_argv=(), prog=None):
    """Prepare the corpus in ``corpus_dir`` into ``dest/data-bin`` (de -> en); returns the data-bin.

    The shipped files are decompressed into ``dest/raw`` (atomically, again only when the
    shipped file is newer), then the pipeline runs with :data:`PIPELINE` and ``pipeline_argv``.
    ``dest`` is locked meanwhile: a second process is refused.
    """
    with locked(dest, what="--dest"):
        return _prepare(Path(dest), Path(corpus_dir), pipeline_argv, prog)


def _prepare(dest, corpus_dir, pipeline_argv, prog):
    raw = dest / "raw"
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            gz, out = corpus_dir / f"{split}.{lang}.gz", raw / f"{split}.{lang}"
            if not gz.is_file():
                raise UserError(f"bundled corpus file not found: {gz} (give --corpus DIR, the folder "
                                "holding {train,valid,test}.{de,en}.gz)")
            if not out.is_file() or gz.stat().st_mtime_ns > out.stat().st_mtime_ns:
                with atomic_output(out) as tmp, gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    argv = PIPELINE + ["--train-prefix", str(raw / "train"), "--valid-prefix", str(raw / "valid"),
                       "--test-prefix", str(raw / "test"), "--dest", str(dest), *pipeline_argv]
    return pipeline.run(pipeline.build_parser(prog=prog or "rskip-prepare bundled").parse_args(argv))

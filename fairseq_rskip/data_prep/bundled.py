"""Build the bundled German-English corpus from Ding's dictionary (Debian package trans-de-en).

Ding (Frank Richter, TU Chemnitz, GPL-2+) is a German-English dictionary whose
entries carry example sentences translated by its editors. This module keeps
the entries' full-sentence examples as a small sentence-aligned corpus:

    python -m fairseq_rskip.data_prep.bundled --deb trans-de-en_1.9-6_all.deb \
        --out examples/translation/corpus/ding-de-en

(scripts/build-bundled-corpus.sh fetches the package and runs this.)

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

import argparse
import gzip
import io
import json
import random
import re
import tarfile
from pathlib import Path

from fairseq_rskip.data_prep.common import PrepError, atomic_output, run_cli, setup_logging, logger
from fairseq_rskip.data_prep.download import verify

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
        raise PrepError(f"{deb_path} is not a Debian package (no ar header)")
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
            raise PrepError(f"{member} not found in {deb_path}")
    raise PrepError(f"no data.tar member in {deb_path}")


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


def build(deb_path, out_dir):
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
    with atomic_output(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %s: %s", out_dir, stats)
    return stats


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deb", required=True, help=f"path to {PACKAGE}_{VERSION}_all.deb")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    setup_logging()
    print(json.dumps(build(args.deb, args.out)))


if __name__ == "__main__":
    run_cli(main)

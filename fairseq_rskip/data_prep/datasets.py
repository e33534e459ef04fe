"""The benchmark recipes: fetch a data set's archives, parse its raw files, run the pipeline.

    rskip-prepare iwslt14      [--dest DIR] [--archive-dir DIR] [...]
    rskip-prepare iwslt15-envi [--dest DIR] [--archive-dir DIR] [...]
    rskip-prepare wmt14-en2de  [--dest DIR] [--archive-dir DIR] [...]

The data sets differ only in where their raw files come from and how they
are parsed into ``DEST/raw/{train,valid,test}.{src,tgt}``; from there on the
generic pipeline (pipeline.py) does the rest with each recipe's options. Any
option not listed here is passed on to the pipeline (e.g. ``--bpe-size``,
``--bpe sentencepiece``, ``--workers``).
"""

import tarfile
from pathlib import Path

from fairseq_rskip.data_prep import pipeline
from fairseq_rskip.data_prep.common import Stamps, fingerprint, logger
from fairseq_rskip.data_prep.download import DownloadError, fetch
from fairseq_rskip.data_prep.formats import pair_up, parse_plain, parse_segments, parse_tagged
from fairseq_rskip.errors import UserError
from fairseq_rskip.file_io import atomic_outputs, locked, remove_partials


class Archive:
    """One downloadable file: mirrors, the name it is saved under, and its checksum if published."""

    def __init__(self, name, urls, sha256=None, md5=None):
        self.name, self.urls, self.sha256, self.md5 = name, list(urls), sha256, md5


# ---------------------------------------------------------------- IWSLT'14 De-En
IWSLT14 = {
    "archives": [
        Archive(
            "de-en.tgz",
            [
                "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz",
                "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",
            ],
        )
    ],
    "src": "de",
    "tgt": "en",
    "dest": "work/iwslt14.de-en",
    # fairseq's recipe: test = dev2010 + TEDX dev2012 + tst2010-2012; valid = every 23rd training pair
    "test_sets": ["TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"],
    "pipeline": ["--lowercase", "--valid-every", "23", "--bpe-size", "10000", "--clean-max-len", "175"],
}


def raw_iwslt14(archives, raw_dir):
    tgz = archives["de-en.tgz"]
    s, t = IWSLT14["src"], IWSLT14["tgt"]
    members = {f"train.tags.de-en.{l}": None for l in (s, t)}
    for name in IWSLT14["test_sets"]:
        for l in (s, t):
            members[f"IWSLT14.{name}.de-en.{l}.xml"] = None
    files = extract_members(tgz, members, raw_dir / "orig")
    train, dropped = pair_up(
        parse_tagged(files[f"train.tags.de-en.{s}"]), parse_tagged(files[f"train.tags.de-en.{t}"]), "IWSLT14 train"
    )
    test = []
    for name in IWSLT14["test_sets"]:
        part, _ = pair_up(
            parse_segments(files[f"IWSLT14.{name}.de-en.{s}.xml"]),
            parse_segments(files[f"IWSLT14.{name}.de-en.{t}.xml"]),
            f"IWSLT14 {name}",
            drop_empty=False,
        )
        test += part
    return {"train": train, "test": test}, dropped


# ---------------------------------------------------------------- IWSLT'15 En-Vi (Stanford release)
_STANFORD = "https://nlp.stanford.edu/projects/nmt/data/iwslt15.en-vi/"
IWSLT15_ENVI = {
    "archives": [Archive(f"{n}.{l}", [_STANFORD + f"{n}.{l}"]) for n in ("train", "tst2012", "tst2013") for l in ("en", "vi")],
    "src": "en",
    "tgt": "vi",
    "dest": "work/iwslt15.en-vi",
    # already tokenised (Moses) by the release; word level with the release's vocabulary sizes
    # (17,191 En / 7,709 Vi entries, three of them special symbols)
    "pipeline": ["--no-tokenize", "--bpe", "none", "--nwords-src", "17188", "--nwords-tgt", "7706",
                 "--clean-ratio", "9", "--clean-max-len", "250"],
}


def raw_iwslt15_envi(archives, raw_dir):
    s, t = IWSLT15_ENVI["src"], IWSLT15_ENVI["tgt"]
    train, dropped = pair_up(parse_plain(archives[f"train.{s}"]), parse_plain(archives[f"train.{t}"]), "En-Vi train")
    out = {"train": train}
    for split, name in (("valid", "tst2012"), ("test", "tst2013")):
        out[split], _ = pair_up(
            parse_plain(archives[f"{name}.{s}"]), parse_plain(archives[f"{name}.{t}"]), f"En-Vi {name}", drop_empty=False
        )
    return out, dropped


# ---------------------------------------------------------------- WMT'14 En-De
WMT14_EN2DE = {
    "archives": [
        Archive("training-parallel-europarl-v7.tgz",
                ["http://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz"],
                sha256="0224c7c710c8a063dfd893b0cc0830202d61f4c75c17eb8e31836103d27d96e7"),
        Archive("training-parallel-commoncrawl.tgz",
                ["http://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz"],
                sha256="c7a74e2ea01ac6c920123108627e35278d4ccb5701e15428ffa34de86fa3a9e5"),
        Archive("training-parallel-nc-v9.tgz",
                ["http://www.statmt.org/wmt14/training-parallel-nc-v9.tgz"],
                sha256="cb8953f292298e6877ae433c98912b927cb0766b303f4540512ddd286c748485"),
        # newstest2013 (SGML), the validation set
        Archive("test.tgz", ["https://statmt.org/wmt13/test.tgz"], md5="48eca5d02f637af44e85186847141f67"),
        # newstest2014, full version (3003 sentences), as in fairseq's recipe
        Archive("test-full.tgz", ["https://statmt.org/wmt14/test-full.tgz"], md5="a8cd784e006feb32ac6f3d9ec7eb389a"),
    ],
    "src": "en",
    "tgt": "de",
    "dest": "work/wmt14.en-de",
    "train_corpora": [
        ("training-parallel-europarl-v7.tgz", "europarl-v7.de-en"),
        ("training-parallel-commoncrawl.tgz", "commoncrawl.de-en"),
        ("training-parallel-nc-v9.tgz", "news-commentary-v9.de-en"),
    ],
    "pipeline": ["--normalize-punct", "--aggressive-dash-splits", "--bpe-size", "40000",
                 "--joined-dictionary", "--clean-max-len", "250"],
}


def raw_wmt14_en2de(archives, raw_dir):
    s, t = WMT14_EN2DE["src"], WMT14_EN2DE["tgt"]
    train, dropped = [], 0
    for archive, stem in WMT14_EN2DE["train_corpora"]:
        files = extract_members(archives[archive], {f"{stem}.{s}": None, f"{stem}.{t}": None}, raw_dir / "orig")
        pairs, d = pair_up(parse_plain(files[f"{stem}.{s}"]), parse_plain(files[f"{stem}.{t}"]), stem)
        train += pairs
        dropped += d
    dev = extract_members(archives["test.tgz"], {f"newstest2013-src.{l}.sgm": None for l in (s, t)}, raw_dir / "orig")
    valid, _ = pair_up(parse_segments(dev[f"newstest2013-src.{s}.sgm"]), parse_segments(dev[f"newstest2013-src.{t}.sgm"]),
                       "newstest2013", drop_empty=False)
    # newstest2014 De-En set: English is the "src" side, German the "ref" side (fairseq's choice)
    names = {s: f"newstest2014-deen-src.{s}.sgm", t: f"newstest2014-deen-ref.{t}.sgm"}
    tst = extract_members(archives["test-full.tgz"], {n: None for n in names.values()}, raw_dir / "orig")
    test, _ = pair_up(parse_segments(tst[names[s]]), parse_segments(tst[names[t]]), "newstest2014", drop_empty=False)
    return {"train": train, "valid": valid, "test": test}, dropped


RECIPES = {
    "iwslt14": (IWSLT14, raw_iwslt14),
    "iwslt15_envi": (IWSLT15_ENVI, raw_iwslt15_envi),
    "wmt14_en2de": (WMT14_EN2DE, raw_wmt14_en2de),
}


# ---------------------------------------------------------------- shared machinery
def extract_members(archive, wanted, out_dir):
    """Extract the members of a tar archive whose base names are the keys of ``wanted``.

    Returns {base name: extracted path}. Files already extracted (by an earlier,
    stamped run) are reused; each is written atomically.
    """
    out_dir = Path(out_dir)
    stamps = Stamps(out_dir)
    names = sorted(wanted)
    outputs = [out_dir / n for n in names]
    params = {"archive": fingerprint([archive]), "members": names}

    def do():
        found = {}
        with tarfile.open(archive, mode="r|*") as tar, atomic_outputs(outputs) as tmps:
            tmp_of = dict(zip(names, tmps))
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in tmp_of and base not in found:
                    with tar.extractfile(member) as src, open(tmp_of[base], "wb") as dst:
                        while True:
                            block = src.read(1 << 20)
                            if not block:
                                break
                            dst.write(block)
                    found[base] = True
            missing = [n for n in names if n not in found]
            if missing:
                raise UserError(f"{archive} lacks {', '.join(missing)}; is it the right archive?")

    try:
        stamps.run("extract-" + Path(archive).name, params, outputs, do)
    except tarfile.TarError as e:
        raise UserError(f"{archive} is not a readable tar archive: {e}") from None
    return dict(zip(names, outputs))


def write_raw(splits, raw_dir, src, tgt):
    """Write {split: [(src, tgt), ...]} to raw_dir/split.{src,tgt}, atomically."""
    for split, pairs in splits.items():
        if not pairs:
            raise UserError(f"the {split} set of the raw data is empty")
        paths = [raw_dir / f"{split}.{src}", raw_dir / f"{split}.{tgt}"]
        with atomic_outputs(paths) as (ts, tt):
            with open(ts, "w", encoding="utf-8") as fs, open(tt, "w", encoding="utf-8") as ft:
                for a, b in pairs:
                    fs.write(a.strip() + "\n")
                    ft.write(b.strip() + "\n")


def prepare(name, dest, pipeline_argv=(), archive_dir=None, download_dir=None, prog=None):
    """Fetch and parse recipe ``name``'s data into ``dest``, then run the pipeline with the
    recipe's options followed by ``pipeline_argv`` (which override them). Returns the data-bin.

    ``archive_dir``: take the archives from there instead of downloading them into
    ``download_dir`` (default ``dest/orig``).
    """
    with locked(dest, what="--dest"):
        return _prepare(name, Path(dest), pipeline_argv, archive_dir, download_dir, prog)


def _prepare(name, dest, pipeline_argv, archive_dir, download_dir, prog):
    recipe, make_raw = RECIPES[name]
    remove_partials(dest)
    download_dir = Path(download_dir) if download_dir else dest / "orig"
    archives = {}
    for a in recipe["archives"]:
        try:
            archives[a.name] = fetch(a.urls, download_dir / a.name, a.sha256, a.md5, archive_dir)
        except DownloadError as err:
            expected = ", ".join(f"{b.name} ({b.urls[0]})" for b in recipe["archives"])
            raise DownloadError(f"{err.failure}. Without network: fetch the archives of {name} "
                                f"elsewhere, {expected}, into one folder and give it as "
                                "--archive-dir DIR", err.failure) from None

    s, t = recipe["src"], recipe["tgt"]
    raw_dir = dest / "raw"
    splits = ["train", "valid", "test"]
    outputs = [raw_dir / f"{sp}.{l}" for sp in splits for l in (s, t)]

    def do_raw():
        data, dropped = make_raw(archives, raw_dir)
        if dropped:
            logger.info("dropped %d training pairs with an empty side", dropped)
        write_raw(data, raw_dir, s, t)

    has_valid = "--valid-every" not in recipe["pipeline"]
    if not has_valid:
        outputs = [o for o in outputs if not o.name.startswith("valid.")]
    Stamps(dest).run("raw", {"recipe": name, "archives": fingerprint(archives.values())}, outputs, do_raw)

    pargs = [
        "--src-lang", s, "--tgt-lang", t, "--dest", str(dest),
        "--train-prefix", str(raw_dir / "train"), "--test-prefix", str(raw_dir / "test"),
    ]
    if has_valid:
        pargs += ["--valid-prefix", str(raw_dir / "valid")]
    # the recipe's options first: the user's own override them
    pargs += recipe["pipeline"] + list(pipeline_argv)
    return pipeline.run(pipeline.build_parser(prog=prog).parse_args(pargs))

"""``rskip-prepare``: raw parallel text, the bundled corpus or a benchmark into a fairseq data-bin.

    rskip-prepare parallel --src-lang de --tgt-lang en --train-prefix raw/train \\
        --valid-prefix raw/valid --test-prefix raw/test --dest work/mydata [options]
    rskip-prepare bundled [DEST]                       # default DEST: work/bundled
    rskip-prepare iwslt14 [--dest DIR] [--archive-dir DIR] [pipeline options]
    rskip-prepare iwslt15-envi [--dest DIR] [--archive-dir DIR] [pipeline options]
    rskip-prepare wmt14-en2de [--dest DIR] [--archive-dir DIR] [pipeline options]
    rskip-prepare download --url URL [--url MIRROR] --dest FILE [--sha256 HEX | --md5 HEX]
    rskip-prepare build-bundled-corpus [trans-de-en_1.9-6_all.deb] [--out DIR]
    rskip-prepare concatenated --data DATA_BIN --pairs MIN [MAX] --dest DIR [--splits ...]

Each prints the path of what it made on stdout (the data-bin, the
downloaded file, or the corpus's sentence counts); progress goes to stderr.
The recipes (``bundled``, ``iwslt14``, ...) pass every option they do not
know to the ``parallel`` pipeline (``rskip-prepare parallel --help``), after
their own, so e.g. ``--bpe sentencepiece --bpe-size 8000`` overrides the
recipe's BPE. Default destinations are relative to the current directory.
"""

import argparse
import json
import sys
import tempfile

from fairseq_rskip.data_prep import bundled, concatenate, datasets, download, pipeline
from fairseq_rskip.data_prep.common import setup_logging
from fairseq_rskip.errors import UserError, run_main

PROG = "rskip-prepare"


def prepare_parallel(argv, prog):
    args = pipeline.build_parser(prog=prog).parse_args(argv)
    setup_logging(args.verbose)
    return pipeline.run(args)


def prepare_bundled(argv, prog):
    dest = argv.pop(0) if argv and not argv[0].startswith("-") else None  # [DEST] first
    p = argparse.ArgumentParser(
        prog=f"{prog} [DEST]", description=f"The bundled German-English corpus ({bundled.CORPUS_DIR}) "
        f"into DEST/data-bin, de -> en, with the options {' '.join(bundled.PIPELINE)} of the "
        f"parallel pipeline; other options go to the pipeline ({PROG} parallel --help).")
    p.add_argument("--dest", help="output folder (default work/bundled, under the current directory)")
    p.add_argument("--corpus", default=str(bundled.CORPUS_DIR),
                   help="folder holding {train,valid,test}.{de,en}.gz (default: the corpus shipped "
                   "with the package)")
    p.add_argument("-v", "--verbose", action="store_true")
    args, rest = p.parse_known_args(argv)
    if dest is not None and args.dest is not None:
        raise UserError(f"{prog}: give DEST or --dest, not both")
    setup_logging(args.verbose)
    return bundled.prepare(args.dest or dest or "work/bundled", args.corpus, rest, prog=prog)


def recipe_command(name):
    recipe = datasets.RECIPES[name][0]

    def prepare_recipe(argv, prog):
        p = argparse.ArgumentParser(
            prog=prog, description=datasets.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--dest", default=recipe["dest"],
                       help=f"output folder (default {recipe['dest']}, under the current directory)")
        p.add_argument("--archive-dir", help="offline: take the archives from this folder instead of downloading")
        p.add_argument("--download-dir", help="where downloads go (default DEST/orig)")
        p.add_argument("-v", "--verbose", action="store_true")
        args, rest = p.parse_known_args(argv)
        setup_logging(args.verbose)
        return datasets.prepare(name, args.dest, rest, archive_dir=args.archive_dir,
                                download_dir=args.download_dir, prog=prog)

    return prepare_recipe


def download_file(argv, prog):
    p = argparse.ArgumentParser(prog=prog, description=download.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", action="append", required=True, help="URL; repeat for mirrors")
    p.add_argument("--dest", required=True)
    p.add_argument("--sha256")
    p.add_argument("--md5")
    p.add_argument("--archive-dir", help="take the file from this folder instead of downloading")
    args = p.parse_args(argv)
    setup_logging()
    return download.fetch(args.url, args.dest, args.sha256, args.md5, args.archive_dir)


def build_bundled_corpus(argv, prog):
    p = argparse.ArgumentParser(prog=prog, description=bundled.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("deb", nargs="?", help=f"path to {bundled.PACKAGE}_{bundled.VERSION}_all.deb (default: "
                   "fetch it with apt-get download)")
    p.add_argument("--out", default=str(bundled.CORPUS_DIR),
                   help="output folder (default: the package's corpus folder, %(default)s)")
    args = p.parse_args(argv)
    setup_logging()
    if args.deb:
        return json.dumps(bundled.build(args.deb, args.out))
    with tempfile.TemporaryDirectory() as tmp:
        return json.dumps(bundled.build(bundled.download_deb(tmp), args.out))


def concatenated(argv, prog):
    p = argparse.ArgumentParser(prog=prog, description=concatenate.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the data-bin whose pairs are joined")
    p.add_argument("--pairs", type=int, nargs="+", required=True, metavar="N",
                   help="pairs per new pair: N, or MIN MAX (drawn uniformly)")
    p.add_argument("--dest", required=True, help="the new data-bin folder")
    p.add_argument("--splits", nargs="+", default=["valid", "test"], help="default: %(default)s")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if len(args.pairs) > 2:
        raise UserError(f"--pairs takes N or MIN MAX; got {len(args.pairs)} numbers")
    setup_logging()
    return concatenate.concatenate(args.data, args.dest, args.pairs[0], args.pairs[-1],
                                   args.splits, args.seed)


COMMANDS = {
    "parallel": prepare_parallel,
    "bundled": prepare_bundled,
    **{name.replace("_", "-"): recipe_command(name) for name in datasets.RECIPES},
    "download": download_file,
    "build-bundled-corpus": build_bundled_corpus,
    "concatenated": concatenated,
}


def main(argv=None):
    """Run the sub-command ``argv[0]``; returns (and prints) what it made."""
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: {PROG} {{{','.join(COMMANDS)}}} [options]"
    if argv[:1] in (["-h"], ["--help"]):
        print(f"{usage}\n\n{__doc__}")
        return None
    if not argv or argv[0] not in COMMANDS:
        got = f"unknown command {argv[0]!r}; " if argv else ""
        raise UserError(f"{got}{usage} ({PROG} --help)")
    name = argv.pop(0)
    made = COMMANDS[name](argv, prog=f"{PROG} {name}")
    print(made)
    return made


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

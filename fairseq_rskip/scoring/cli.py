"""``rskip-evaluate``: translate a test set with fairseq-generate and score it (see
:mod:`fairseq_rskip.scoring.evaluate`), or compare two systems with sacreBLEU's paired
tests (``--compare``, :mod:`fairseq_rskip.scoring.compare`)."""


from fairseq_rskip.data_prep.common import setup_logging
from fairseq_rskip.errors import run_main
from fairseq_rskip.scoring.compare import compare, summary_lines
from fairseq_rskip.scoring.evaluate import build_parser, evaluate, summary_line


def main(argv=None):
    """Options after ``--`` (or unknown ones) go to fairseq-generate; returns the JSON record."""
    args, extra = build_parser().parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    setup_logging(args.verbose)
    if args.compare:
        result = compare(args, extra)
        print("\n".join(summary_lines(result)))
        return result
    record = evaluate(args, extra)
    print(summary_line(record))
    return record


def cli_main():
    run_main(main)


if __name__ == "__main__":
    cli_main()

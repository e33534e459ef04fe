#!/usr/bin/env python
"""Peak memory of a command and every process it starts: the largest summed resident set
size (``VmRSS``) and proportional set size (PSS: shared pages counted once) of the process
tree, sampled every 0.2 s (:func:`fairseq_rskip.tools.common.child_process.peak_tree_rss`).

    python benchmarks/peak_tree_rss.py -- rskip-benchmark --quick

Prints ``peak tree RSS: N MiB, PSS: M MiB`` and exits with the command's status.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's fairseq_rskip

from fairseq_rskip.tools.common.child_process import peak_tree_rss  # noqa: E402
from fairseq_rskip.errors import UserError, run_main  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                usage="%(prog)s [--interval S] -- COMMAND ...")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    p.add_argument("command", nargs=argparse.REMAINDER)
    opts = p.parse_args(argv)
    cmd = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not cmd:
        raise UserError("no command given: peak_tree_rss.py -- COMMAND ...")
    try:
        returncode, peak_mib, peak_pss_mib = peak_tree_rss(cmd, opts.interval)
    except FileNotFoundError as err:
        raise UserError(f"command not found: {cmd[0]} ({err.strerror})") from None
    print(f"peak tree RSS: {peak_mib:.0f} MiB, PSS: {peak_pss_mib:.0f} MiB ({' '.join(cmd)})", flush=True)
    return returncode


if __name__ == "__main__":
    sys.exit(run_main(main))

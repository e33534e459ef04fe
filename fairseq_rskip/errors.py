"""How the tools report a user's mistake.

Library code raises :class:`UserError` for anything the user can fix (a flag,
a file, a folder); :func:`run_main`, which every command of
:mod:`fairseq_rskip.cli` runs its ``main`` under, turns it into one line
``error: MESSAGE`` on stderr and exit status 2, with no traceback.
"""

import sys


class UserError(Exception):
    """A problem with the user's input or environment; the message names the flag or
    file at fault and, where there is one, the fix."""


def run_main(main, argv=None):
    """``main(argv)``; a UserError becomes ``error: ...`` on stderr and exit status 2,
    Ctrl-C exit status 130. Returns what ``main`` returned."""
    try:
        return main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None

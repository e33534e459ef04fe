"""How the tools report a user's mistake.

Library code raises :class:`UserError` for anything the user can fix (a flag,
a file, a folder); :func:`run_main`, which every command of the package (each
tool's ``cli.py``) runs its ``main`` under, turns it into one line ``error:
MESSAGE`` on stderr and exit status 2, with no traceback.

A stock fairseq command (``fairseq-train``, ``fairseq-generate``) has no
``run_main`` around it: a problem found while it builds the model
(:class:`ModelBuildError`) or a ``--user-dir`` inside the plugin
(:class:`UserDirError`) is an :class:`ErrorLineExit`, which ends such a command
the same way.
"""

import os
import sys


class UserError(Exception):
    """A problem with the user's input or environment; the message names the flag or
    file at fault and, where there is one, the fix."""


class ErrorLineExit(UserError, SystemExit):
    """A :class:`UserError` that is also a ``SystemExit`` whose code is the line ``error:
    MESSAGE``: uncaught (in a stock fairseq command, which has no :func:`run_main`),
    Python prints that line on stderr and exits with status 1, without a traceback.
    Code in a process catches it as a UserError."""

    def __init__(self, message: str):
        UserError.__init__(self, message)
        self.code = f"error: {message}"


class ModelBuildError(ErrorLineExit, ValueError):
    """A :class:`UserError` found while the model is built (a flag's rule, which
    raises ``ValueError``, or a file a flag names): it ends a stock fairseq command
    with its ``error:`` line before fairseq loads any data (:class:`ErrorLineExit`).
    Code in a process catches it as a UserError or, as the rules' errors, a
    ValueError."""


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


class UserDirError(ErrorLineExit):
    """``--user-dir`` names a folder inside the plugin: the stock fairseq command ends with
    its ``error:`` line (:class:`ErrorLineExit`)."""


def _as_given(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith("..") else relative


def refuse_import_as_top_level(module_name: str, init_file: str) -> None:
    """Called first in each subpackage's ``__init__.py``. fairseq imports ``--user-dir DIR``
    as the top-level module named after DIR's last folder, so ``--user-dir
    fairseq_rskip/models`` imports ``models``: the plugin's code a second time, under other
    names, whose registrations fairseq refuses as duplicates. Raises :class:`UserDirError`,
    naming the folder to give, unless ``module_name`` is inside ``fairseq_rskip``."""
    if module_name.startswith("fairseq_rskip."):
        return
    given = plugin = os.path.dirname(os.path.abspath(init_file))
    while os.path.isfile(os.path.join(os.path.dirname(plugin), "__init__.py")):
        plugin = os.path.dirname(plugin)  # up to the package's top folder
    raise UserDirError(f"--user-dir {_as_given(given)} is a folder inside the plugin: give the "
                       f"plugin's own folder, --user-dir {_as_given(plugin)}")

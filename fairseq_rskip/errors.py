"""How the tools report a user's mistake.

Library code raises :class:`UserError` for anything the user can fix (a flag,
a file, a folder); :func:`run_main`, which every command of the package (each
tool's ``cli.py``) runs its ``main`` under, turns it into one line ``error:
MESSAGE`` on stderr and exit status 2, with no traceback.

A stock fairseq command (``fairseq-train``, ``fairseq-generate``) has no
``run_main`` around it: a problem found while it builds the model is a
:class:`ModelBuildError`, which ends such a command the same way.
"""

import os
import sys


class UserError(Exception):
    """A problem with the user's input or environment; the message names the flag or
    file at fault and, where there is one, the fix."""


class ModelBuildError(UserError, ValueError, SystemExit):
    """A :class:`UserError` found while the model is built (a flag's rule, which
    raises ``ValueError``, or a file a flag names). Also a ``SystemExit`` whose
    code is the line ``error: MESSAGE``: uncaught (in a stock fairseq command),
    Python prints that line on stderr and exits with status 1, without a
    traceback, before fairseq loads any data. Code in a process catches it as a
    UserError or, as the rules' errors, a ValueError."""

    def __init__(self, message: str):
        UserError.__init__(self, message)
        self.code = f"error: {message}"


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


class UserDirError(UserError, SystemExit):
    """``--user-dir`` names a folder inside the plugin. Like :class:`ModelBuildError`, a
    ``SystemExit`` whose code is the line ``error: MESSAGE``, so that a stock fairseq
    command ends with that line and no traceback."""

    def __init__(self, message: str):
        UserError.__init__(self, message)
        self.code = f"error: {message}"


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
    try:
        plugin, given = (os.path.relpath(p) if not os.path.relpath(p).startswith("..") else p
                         for p in (plugin, given))
    except ValueError:  # another drive (Windows)
        pass
    raise UserDirError(f"--user-dir {given} is a folder inside the plugin: give the plugin's "
                       f"own folder, --user-dir {plugin}")

"""The stock fairseq commands the tools drive, and the ``--user-dir`` to give them.

``fairseq-train``, ``fairseq-generate`` and ``fairseq-preprocess`` are taken
from the environment of the running interpreter (its ``bin/`` folder), never
from whatever ``PATH`` holds, so a tool started from a virtual environment
drives that environment's fairseq. ``PLUGIN_DIR`` is this package's own
folder: what ``--user-dir`` needs, in a checkout and in an installed package
alike.
"""

import os
import sys
import sysconfig
from pathlib import Path
from typing import Dict, Optional

from fairseq_rskip.errors import UserError

PLUGIN_DIR = Path(os.path.dirname(os.path.abspath(__file__)))


def _script_folders():
    folders = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():  # pip install --user
        folders.append(sysconfig.get_path("scripts", user_scheme))
    return [Path(f) for f in dict.fromkeys(folders) if f]


def fairseq_executable(name: str) -> str:
    """The path of fairseq's console script ``name`` (e.g. ``fairseq-train``) next to this Python."""
    folders = _script_folders()
    for folder in folders:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    raise UserError(
        f"{name} not found in {', '.join(map(str, folders))} (the environment of "
        f"{sys.executable}); install fairseq-fixed into it (see README.md, Installation)"
    )


def child_env(threads: Optional[int] = None) -> Dict[str, str]:
    """The environment for a child process: it imports this same fairseq_rskip (the folder
    holding it comes first on PYTHONPATH) and, with ``threads``, uses that many CPU threads."""
    env = dict(os.environ)
    parent = str(PLUGIN_DIR.parent)
    env["PYTHONPATH"] = parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env

"""Writing outputs so that an interrupted tool never leaves one that looks finished.

Every file or folder is written under a temporary name (``.partial-PID-NAME``)
in its destination folder and renamed into place only when complete
(:func:`atomic_output`); a later run deletes what an interrupted one left
(:func:`remove_partials`). :func:`locked` keeps a second process out of a
folder a tool is writing into.
"""

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path

from fairseq_rskip.errors import UserError

logger = logging.getLogger(__name__)

PARTIAL = ".partial-"


def remove(path):
    """Delete a file, link or folder if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{PARTIAL}{os.getpid()}-{path.name}")
    remove(tmp)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"step produced no output for {path}")
    remove(path)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_outputs(paths):
    """Like atomic_output for several files: all are renamed into place, or none is."""
    paths = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic_output(p)) for p in paths]
        yield tmps


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path``, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")


def remove_partials(folder):
    """Delete the temporary files an interrupted earlier run left in ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in list(folder.rglob(f"{PARTIAL}*")):
        logger.info("removing leftover of an interrupted run: %s", p)
        remove(p)


_HELD = {}  # folders this process holds locked (resolved path -> depth)


@contextlib.contextmanager
def locked(folder, what="folder"):
    """Hold an exclusive lock on ``folder`` (the file ``folder/.lock``, with ``filelock``)
    while the block runs, creating the folder if needed. If another process holds it, raise
    :class:`UserError` at once rather than wait: two writers in one folder would mix their
    outputs. Within one process the lock nests (a recipe locks its --dest, then runs the
    pipeline, which locks it again)."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder: give a folder (it is made "
                        "if it does not exist)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot make {what} {folder}: {err.strerror}") from None
    key = folder.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    lock = FileLock(folder / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"{what} {folder} is in use by another process (it holds {folder / '.lock'}); "
            "wait for it to finish, or use another folder"
        ) from None
    _HELD[key] = 1
    try:
        yield folder
    finally:
        del _HELD[key]
        lock.release()

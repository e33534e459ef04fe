"""Live progress of long work: tqdm bars on stderr, drawn only when stderr is a terminal.

A bar shows what is done of the total, the elapsed time and an estimate of
what is left; when stderr is a file or a pipe (a log, a CI job) nothing is
drawn, and the tools' one-line summaries (printed with :func:`write`, which
keeps a live bar intact) are all that appears.
"""

import logging
import os
import sys

from tqdm import tqdm


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _width(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):  # no file descriptor, or not a terminal
        return 0


def progress_bar(total=None, desc=None, unit="it", file=None, **kwargs) -> tqdm:
    """A tqdm bar on ``file`` (default: the current stderr), disabled unless it is a terminal."""
    file = sys.stderr if file is None else file
    # follow the terminal's size; one that reports none (0 x 0, where tqdm would draw
    # nothing at all) gets 80 x 24
    width = {"dynamic_ncols": True} if _width(file) > 0 else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=not is_terminal(file),
                leave=False, **width, **kwargs)


def write(message: str, file=None) -> None:
    """Print one line (default: to stdout) without breaking a live bar."""
    tqdm.write(message, file=sys.stdout if file is None else file)


def quiet_root_logger() -> None:
    """Put the root logger back to WARNING on stderr: importing fairseq sets it to DEBUG (its
    ``wav2vec2_classification`` module calls ``logging.basicConfig``), which would print
    fairseq's INFO lines among a tool's own."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)

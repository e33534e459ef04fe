"""Download with resume and checksum verification, or take an already downloaded archive.

The one place where raw archives enter the pipeline (also a command of its own,
``rskip-prepare download --url URL [--url MIRROR] --dest FILE [--sha256 HEX | --md5 HEX]
[--archive-dir DIR]``):

- A download goes to ``FILE.part`` and is resumed from there (an HTTP Range
  request) after an interruption; ``FILE`` appears only after its checksum
  matched.
- ``--archive-dir DIR`` (offline use) takes ``DIR/<basename of FILE>`` instead
  of downloading, after checking its checksum; a missing file is an error.
- Without a published checksum the first download's SHA-256 is recorded in
  ``FILE.sha256`` and checked on every later use (trust on first use).
"""

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from fairseq_rskip.data_prep.common import logger
from fairseq_rskip.errors import UserError

CHUNK = 1 << 20


def file_digest(path, algo):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, sha256=None, md5=None, what=None):
    """Raise UserError unless ``path`` has the given digest(s)."""
    what = what or str(path)
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            got = file_digest(path, algo)
            if got.lower() != expected.lower():
                raise UserError(
                    f"checksum mismatch for {what}: expected {algo} {expected}, got {got}; "
                    "the file is corrupt, truncated or a different release"
                )


def _http_download(url, part, timeout=60):
    """Download ``url`` into ``part``, resuming from its current size."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "fairseq_rskip-data-prep"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range not satisfiable: the part file is already complete
            return
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if have and status == 206:
            mode = "ab"
            logger.info("resuming %s at byte %d", url, have)
        else:
            mode = "wb"  # server ignored the range (or fresh start): start over
        total = resp.headers.get("Content-Length")
        with open(part, mode) as f:
            shutil.copyfileobj(resp, f, CHUNK)
    if total is not None and status in (200, 206):
        expected = int(total) + (have if mode == "ab" else 0)
        if part.stat().st_size != expected:
            raise OSError(f"download of {url} stopped at {part.stat().st_size} of {expected} bytes")


class DownloadError(UserError):
    """No URL of a file answered; the message says how to give the file by ``--archive-dir``,
    ``failure`` what went wrong."""

    def __init__(self, message: str, failure: str):
        super().__init__(message)
        self.failure = failure


def fetch(urls, dest, sha256=None, md5=None, archive_dir=None, retries=3):
    """Return the path of a verified copy of the file ``dest`` (see the module docstring)."""
    if isinstance(urls, str):
        urls = [urls]
    dest = Path(dest)
    tofu = dest.with_name(dest.name + ".sha256")

    def check(path):
        verify(path, sha256, md5, what=str(path))
        if not (sha256 or md5):
            got = file_digest(path, "sha256")
            if tofu.exists():
                recorded = tofu.read_text().split()[0]
                if recorded != got:
                    raise UserError(
                        f"checksum mismatch for {path}: it changed since first use "
                        f"(recorded sha256 {recorded} in {tofu}, got {got})"
                    )
            else:
                logger.warning("no published checksum for %s; recording sha256 %s in %s", path.name, got, tofu)
                tofu.parent.mkdir(parents=True, exist_ok=True)
                tofu.write_text(f"{got}  {path.name}\n")

    if archive_dir is not None:
        local = Path(archive_dir) / dest.name
        if not local.is_file():
            raise UserError(
                f"missing archive: {local} not found (offline mode via --archive-dir); "
                f"download it from {urls[0]}"
            )
        check(local)
        logger.info("using %s", local)
        return local

    if dest.is_file():
        check(dest)
        logger.info("already downloaded: %s", dest)
        return dest

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        for attempt in range(retries):
            try:
                logger.info("downloading %s -> %s", url, dest)
                _http_download(url, part)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {e}")
                logger.warning("download failed (%s), attempt %d/%d", e, attempt + 1, retries)
                if isinstance(e, urllib.error.HTTPError) and e.code == 404:
                    break
        else:
            continue
        if part.exists():
            break
    if not part.exists():
        failure = f"could not download {dest.name}: " + "; ".join(dict.fromkeys(errors[-6:]))
        raise DownloadError(f"{failure}. Without network: fetch it elsewhere ({urls[0]}) and "
                            f"give --archive-dir DIR, the folder that holds {dest.name}", failure)
    try:
        check(part)
    except UserError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest

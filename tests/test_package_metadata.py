"""The package's metadata says what it ships: its version is the code's, the
code is MIT and the bundled corpus GPL-2.0-or-later, both licence files inside."""

import email
import subprocess
import sys

import fairseq_rskip
from conftest import REPO


def test_metadata_names_both_licences_and_the_code_version(tmp_path):
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                   cwd=REPO, check=True, capture_output=True)
    (info,) = tmp_path.glob("*.egg-info")
    meta = email.message_from_string((info / "PKG-INFO").read_text(encoding="utf-8"))
    assert meta["Version"] == fairseq_rskip.__version__
    assert meta["License-Expression"] == "MIT AND GPL-2.0-or-later"
    assert sorted(meta.get_all("License-File")) == ["LICENSE", "fairseq_rskip/corpus/ding-de-en/LICENSE"]
    sources = (info / "SOURCES.txt").read_text(encoding="utf-8").split()
    assert "fairseq_rskip/corpus/ding-de-en/LICENSE" in sources
    assert "GNU GENERAL PUBLIC LICENSE" in (REPO / "fairseq_rskip/corpus/ding-de-en/LICENSE").read_text()
    assert (REPO / "LICENSE").read_text().startswith("MIT License")

"""docs/flags.md and docs/variants.md are what the code's declarations make:
a flag or a variant changed without regenerating them fails here."""

import subprocess
import sys

from conftest import REPO
from fairseq_rskip import reference
from fairseq_rskip.config import SkipNormConfig, flag
from fairseq_rskip.variants import VARIANTS

DOCS = REPO / "docs"


def test_the_generated_pages_are_up_to_date():
    assert reference.stale_pages(DOCS) == [], "run: python -m fairseq_rskip.reference docs"


def test_every_flag_and_every_variant_is_on_its_page():
    flags = (DOCS / "flags.md").read_text(encoding="utf-8")
    names = SkipNormConfig.flag_names()
    assert len(names) == 36
    for name in names:
        assert f"| `{flag(name)}` | " in flags, name
    assert "| `--decay-timescale` | `4000` | a finite number > 0 |" in flags
    variants = (DOCS / "variants.md").read_text(encoding="utf-8")
    for name, variant in VARIANTS.items():
        assert f"| `{name}` | `{variant.arch}` |" in variants, name


def test_a_changed_help_text_makes_the_page_stale(tmp_path, monkeypatch):
    for name, make in reference.PAGES.items():
        (tmp_path / name).write_text(make(), encoding="utf-8")
    assert reference.stale_pages(tmp_path) == []
    field = SkipNormConfig.__dataclass_fields__["skip_scale"]
    monkeypatch.setattr(field, "metadata", {**field.metadata, "help": "changed"})
    assert reference.stale_pages(tmp_path) == ["flags.md"]


def test_the_check_command_names_a_stale_page(tmp_path):
    (tmp_path / "flags.md").write_text("old\n", encoding="utf-8")
    (tmp_path / "variants.md").write_text(reference.variants_page(), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "fairseq_rskip.reference", str(tmp_path), "--check"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert f"{tmp_path / 'flags.md'} differs from the code" in proc.stderr
    assert "variants.md" not in proc.stderr

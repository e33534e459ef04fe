"""docs/flags.md, docs/variants.md and the families' tables of README.md and
docs/architectures.md are what the code's declarations make: a flag, a variant
or a family changed without regenerating them fails here."""

import dataclasses
import subprocess
import sys

import pytest

from conftest import REPO
from fairseq_rskip import reference
from fairseq_rskip.config import SkipNormConfig, flag
from fairseq_rskip.models.architectures import FAMILIES
from fairseq_rskip.variants import VARIANTS

DOCS = REPO / "docs"


def test_the_generated_pages_are_up_to_date():
    assert reference.stale_pages(DOCS) == [], "run: python -m fairseq_rskip.reference docs"
    assert reference.stale_blocks(REPO) == [], "run: python -m fairseq_rskip.reference docs"


def test_every_family_is_in_the_readme_and_architectures_tables():
    for path in reference.BLOCK_FILES:
        text = (REPO / path).read_text(encoding="utf-8")
        for name, family in FAMILIES.items():
            assert f"| `{name}` | {family.wiring} |" in text, (path, name)


def copy_block_files(tmp_path):
    for path in [*reference.BLOCK_FILES, reference.DEMO_REPORT]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text((REPO / path).read_text(encoding="utf-8"), encoding="utf-8")


def test_a_changed_family_makes_the_tables_stale(tmp_path, monkeypatch):
    copy_block_files(tmp_path)
    assert reference.stale_blocks(tmp_path) == []
    monkeypatch.setitem(FAMILIES, "transformer_rskip",
                        dataclasses.replace(FAMILIES["transformer_rskip"], wiring="changed"))
    assert reference.stale_blocks(tmp_path) == sorted(reference.BLOCK_FILES)
    (tmp_path / "README.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no block 'families'"):
        reference.stale_blocks(tmp_path)


def test_the_readme_shows_the_demo_report_it_keeps(tmp_path):
    """README.md's demo table: every row of the kept report with its scores, when and on what
    it trained, and the runner's sentence on the paired tests; another report makes it stale."""
    copy_block_files(tmp_path)
    report = (REPO / reference.DEMO_REPORT).read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = reference._table_rows(report, "| architecture |")
    assert {row["architecture"] for row in rows} == {"postln", "rskip"}
    for row in rows:
        assert (f"| `{row['fairseq --arch']}` ({row['architecture']}) | {row['depth']}+{row['depth']} | "
                f"{row['BLEU (tok)']} | {row['sacreBLEU']} |") in readme
    sentence = next(line for line in report.splitlines() if line.startswith("- rskip vs postln"))
    assert f"The paired comparison: {sentence[2:]}" in readme
    assert next(line for line in report.splitlines() if line.startswith("Trained on ")) in readme
    changed = report.replace(f"| {rows[0]['sacreBLEU']} |", "| 99.99 |", 1)
    (tmp_path / reference.DEMO_REPORT).write_text(changed, encoding="utf-8")
    assert reference.stale_blocks(tmp_path) == ["README.md"]


def test_every_flag_and_every_variant_is_on_its_page():
    flags = (DOCS / "flags.md").read_text(encoding="utf-8")
    names = SkipNormConfig.flag_names()
    declared = [f for f in dataclasses.fields(SkipNormConfig) if "help" in f.metadata and not f.name.startswith("_")]
    assert len(names) == len(declared) > 0
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

"""The README is a guide and the docs hold together: the README stays short,
shows early the commands a newcomer came for (train rSkip on IWSLT'14 on a GPU,
on the data the prepare command writes; compare variants), no product text
speaks of work items, and every relative link of the README and docs/ leads to
a file. Reads files only: no fairseq run."""

import re
import shlex
from pathlib import Path

from conftest import joined_line
from fairseq_rskip.data_prep.datasets import RECIPES

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# generated from the code (the flags' declarations, the table of variants); linked before they exist
GENERATED = {REPO / "docs" / "flags.md", REPO / "docs" / "variants.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
WORK_ITEM = re.compile(r"issue [0-9]", re.IGNORECASE)


def readme_lines():
    return README.read_text(encoding="utf-8").splitlines()


def commands(lines, program):
    """The command lines of ``program`` in ``lines`` (also after a ``$ `` prompt),
    each joined over its ``\\`` continuations, as argument lists."""
    found = []
    i = 0
    while i < len(lines):
        line, last = joined_line(lines, i)
        if line.startswith("$ "):
            line = line[2:]
        if line.split(" ", 1)[0] == program:
            found.append(shlex.split(line, comments=True))
            i = last
        i += 1
    return found


def option(args, *names):
    """The value of the first of ``names`` in ``args``, or None."""
    for i, arg in enumerate(args[:-1]):
        if arg in names:
            return args[i + 1]
    return None


def iwslt14_data_bin():
    """Where ``rskip-prepare iwslt14`` writes its data-bin by default: DEST/data-bin."""
    return Path(RECIPES["iwslt14"][0]["dest"]) / "data-bin"


def is_gpu_rskip_training_on_iwslt14(args):
    arch = option(args, "--arch", "-a") or ""
    return (arch.startswith("transformer_rskip") and "--fp16" in args
            and len(args) > 1 and Path(args[1]) == iwslt14_data_bin())


def text_files(*roots):
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # images
                continue


def broken_links(path):
    """The relative link targets in ``path`` that name no existing file or folder."""
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # http(s), mailto, anchors of the same page
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if resolved in GENERATED and not resolved.exists():
            continue
        if not resolved.exists():
            broken.append(target)
    return broken


def test_readme_is_at_most_250_lines():
    assert len(readme_lines()) <= 250


def test_readme_trains_rskip_in_fp16_on_the_prepared_iwslt14_within_150_lines():
    trainings = commands(readme_lines()[:150], "fairseq-train")
    assert any(is_gpu_rskip_training_on_iwslt14(args) for args in trainings), trainings


def test_readme_prepares_iwslt14_before_training_on_it():
    lines = readme_lines()[:150]
    assert any(args[1:2] == ["iwslt14"] for args in commands(lines, "rskip-prepare"))


def test_readme_compares_variants_with_rskip_reproduce_within_200_lines():
    reproduce = commands(readme_lines()[:200], "rskip-reproduce")
    assert any("--archs" in args for args in reproduce), reproduce


def test_no_work_items_in_product_text():
    found = [f"{path.relative_to(REPO)}: {m.group(0)}"
             for path, text in text_files(README, REPO / "docs", REPO / "examples")
             for m in WORK_ITEM.finditer(text)]
    assert found == []


def test_every_relative_link_of_readme_and_docs_leads_to_a_file():
    pages = [README] + sorted((REPO / "docs").rglob("*.md"))
    broken = {str(p.relative_to(REPO)): broken_links(p) for p in pages if broken_links(p)}
    assert broken == {}


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[gone](missing.md#anchor) [web](https://example.org) [here](#x) [self](page.md)\n")
    assert broken_links(page) == ["missing.md#anchor"]


def test_commands_are_joined_over_continuations():
    lines = ["    fairseq-train DATA \\", "        --arch transformer_rskip_tiny --fp16  # note", "next"]
    assert commands(lines, "fairseq-train") == [["fairseq-train", "DATA", "--arch", "transformer_rskip_tiny", "--fp16"]]

"""rskip-prepare concatenated: consecutive pairs of a data-bin joined into longer ones."""

import torch

from conftest import run
from fairseq_rskip.data_prep.concatenate import groups


def load(folder, split, lang):
    from fairseq.data import data_utils

    ds = data_utils.load_indexed_dataset(str(folder / f"{split}.src-tgt.{lang}"), None)
    return [ds[i] for i in range(len(ds))]


def test_groups_cover_every_pair_once_in_order():
    spans = list(groups(23, 4, 8, seed=3))
    assert [i for span in spans for i in span] == list(range(23))
    assert all(4 <= len(span) <= 8 for span in spans[:-1]) and 1 <= len(spans[-1]) <= 8
    assert spans == list(groups(23, 4, 8, seed=3))  # the seed fixes them


def test_the_command_joins_consecutive_pairs_with_one_end_of_sentence(data_bin, tmp_path):
    dest = tmp_path / "long"
    proc = run(["rskip-prepare", "concatenated", "--data", data_bin, "--pairs", "4", "--dest", dest,
                "--splits", "valid"])
    assert proc.stdout.strip().endswith(str(dest))
    assert (dest / "dict.src.txt").read_text() == (data_bin / "dict.src.txt").read_text()
    eos = 2
    for lang in ("src", "tgt"):
        before, after = load(data_bin, "valid", lang), load(dest, "valid", lang)
        assert len(after) == len(before) // 4 == 10
        for k, joined in enumerate(after):
            parts = before[4 * k: 4 * k + 4]
            expected = torch.cat([p[:-1] for p in parts] + [torch.tensor([eos])])
            assert torch.equal(joined, expected)
            assert int((joined == eos).sum()) == 1


def test_pairs_out_of_order_are_refused(data_bin, tmp_path):
    proc = run(["rskip-prepare", "concatenated", "--data", data_bin, "--pairs", "5", "2", "--dest",
                tmp_path / "x"], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --pairs needs 1 <= MIN <= MAX; got 5 2"]
    assert not (tmp_path / "x").exists()


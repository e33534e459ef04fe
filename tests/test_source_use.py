"""The source-use measurement (fairseq_rskip/tools/source_use/source_use.py): cross-entropy with each
target's own source and with another sentence's, over every sentence, and by target length."""

import math

import pytest
import torch

from conftest import build_model, make_dictionary
from fairseq_rskip.tools.common import modelbuild
from fairseq_rskip.tools.source_use import source_use
from fairseq_rskip.tools.common.intervals import t_interval


def batches_of(dictionary, lengths, seed=0):
    """fairseq batches of random sentences, one batch per entry of ``lengths`` (target
    lengths, end of sentence included), four sentences each, sources of 6 tokens."""
    g = torch.Generator().manual_seed(seed)
    words = [dictionary[i] for i in range(dictionary.nspecial, len(dictionary))]

    def sentence(n):
        return " ".join(words[int(i)] for i in torch.randint(len(words), (n - 1,), generator=g))

    return [modelbuild.collate_pairs([(sentence(6), sentence(n)) for _ in range(4)], dictionary)
            for n in lengths]


def reference_bits(model, batches, pad, roll=False):
    """Mean token cross-entropy in bits, written out: every target token of every batch."""
    nats, tokens = 0.0, 0
    with torch.no_grad():
        for sample in batches:
            net_input = dict(sample["net_input"])
            if roll:
                net_input = {**net_input, "src_tokens": net_input["src_tokens"].roll(1, 0),
                             "src_lengths": net_input["src_lengths"].roll(1, 0)}
            logits, _ = model(**net_input)
            logp = torch.log_softmax(logits.double(), -1)
            target = sample["target"]
            for b in range(target.size(0)):
                for t in range(target.size(1)):
                    if target[b, t] != pad:
                        nats -= float(logp[b, t, target[b, t]])
                        tokens += 1
    return nats / tokens / math.log(2)


def test_the_cross_entropies_are_those_written_out_and_the_buckets_partition_the_sentences():
    d = make_dictionary()
    model = build_model("transformer_rskip_tiny", dictionary=d).eval()
    batches = batches_of(d, [5, 12, 25, 64])
    result = source_use.measure(model, batches, d.pad(), "rskip")
    assert result.total.bits == pytest.approx(reference_bits(model, batches, d.pad()), rel=1e-5)
    assert result.total.bits_other == pytest.approx(reference_bits(model, batches, d.pad(), roll=True), rel=1e-5)
    assert result.total.sentences == 16 and result.total.tokens == 4 * (5 + 12 + 25 + 64)
    assert abs(result.total.source_worth) > 1e-4  # Post-LN reads its source from the start
    counts = {source_use.bucket_label(*b): t.sentences for b, t in result.buckets.items()}
    assert counts == {"1-9": 4, "10-19": 4, "20-29": 4, "30-39": 0, "40-59": 0, "60+": 4}
    assert sum(t.tokens for t in result.buckets.values()) == result.total.tokens
    # the 60+ bucket alone, written out
    assert result.buckets[(60, math.inf)].bits == pytest.approx(
        reference_bits(model, batches[3:], d.pad()), rel=1e-5)
    gap = source_use.worst_bucket_gap(result)
    ref = (result.buckets[(10, 20)].nats + result.buckets[(20, 30)].nats) / (4 * 12 + 4 * 25) / math.log(2)
    assert gap == pytest.approx(max(t.bits for t in result.buckets.values() if t.tokens) - ref)


@pytest.mark.parametrize("arch, extra", [("transformer_espa_tiny", ()), ("transformer_uspa_tiny", ()),
                                         ("transformer_vanilla_tiny", ("--value-skipinit",))])
def test_a_model_that_cannot_see_its_source_is_worth_zero_bits_of_it(arch, extra):
    """Every shaped model at initialisation with the default cross-attention (g = 0): the
    source is worth exactly nothing, in every bucket, targets of 120 tokens included."""
    d = make_dictionary()
    model = build_model(arch, *extra, dictionary=d)
    result = source_use.measure(model, batches_of(d, [8, 15, 120]), d.pad(), arch)
    assert result.buckets[(60, math.inf)].sentences == 4
    assert not model.training
    for totals in [result.total, *result.buckets.values()]:
        if totals.tokens:
            assert totals.nats_other == pytest.approx(totals.nats, rel=1e-6)
            assert math.isfinite(totals.bits)


def test_the_table_and_rows_name_every_bucket():
    d = make_dictionary()
    model = build_model("transformer_rskip_tiny", dictionary=d)
    result = source_use.measure(model, batches_of(d, [5, 70]), d.pad(), "rskip")
    table = source_use.markdown([result])
    assert "| 1-9 | 10-19 | 20-29 | 30-39 | 40-59 | 60+ |" in table
    assert f"| rskip | 8 | {4 * 75} | {result.total.bits:.3f} |" in table
    rows = source_use.rows([result])
    assert [r["target_tokens"] for r in rows] == ["all", "1-9", "10-19", "20-29", "30-39", "40-59", "60+"]
    assert rows[-1]["sentences"] == 4 and rows[3]["bits"] == ""


def test_a_name_given_several_times_is_summed_up_and_paired():
    d = make_dictionary()
    batches = batches_of(d, [12, 25])
    results = []
    for seed in (1, 2, 3):
        for arch, name in (("transformer_rskip_tiny", "rskip"), ("transformer_espa_tiny", "espa")):
            model = build_model(arch, seed=seed, dictionary=d)
            results.append(source_use.measure(model, batches, d.pad(), name))
    rskip = [r for r in results if r.name == "rskip"]
    espa = [r for r in results if r.name == "espa"]
    def mean_range(values):
        return f"{sum(values) / 3:.3f} ({min(values):.3f} to {max(values):.3f})"

    summary = source_use.seed_summary(results)
    assert (f"| rskip | 3 | {mean_range([r.total.bits for r in rskip])} | "
            f"{mean_range([r.total.source_worth for r in rskip])} | - |") in summary  # no 60+ target
    paired = source_use.paired_differences(results, "rskip", "espa")
    diffs = [a.total.bits - b.total.bits for a, b in zip(rskip, espa)]
    iv = t_interval(diffs)
    assert (f"| cross-entropy | {iv['mean']:+.3f} | {iv['low']:+.3f} to {iv['high']:+.3f} | "
            + ", ".join(f"{x:+.3f}" for x in diffs) + " |") in paired
    with pytest.raises(KeyError):
        source_use.paired_differences(results, "rskip", "uspa")


def test_the_command_refuses_bad_names_and_pairs_in_one_line(tmp_path):
    from fairseq_rskip.errors import UserError
    from fairseq_rskip.tools.source_use import cli

    ckpt = tmp_path / "a.pt"
    ckpt.write_bytes(b"")
    cases = [
        (["--checkpoint", "a"], "--checkpoint takes NAME=PATH; got a"),
        (["--checkpoint", f"a={tmp_path / 'missing.pt'}"], "no such file"),
        (["--checkpoint", f"a={ckpt}", "--pair", "a", "b"], "no --checkpoint named b"),
        (["--checkpoint", f"a={ckpt}", "--checkpoint", f"a={ckpt}", "--checkpoint", f"b={ckpt}",
          "--pair", "a", "b"], "2 and 1 --checkpoint items; pairs need as many of each"),
    ]
    for argv, message in cases:
        with pytest.raises(UserError, match=message):
            cli.main(["--data", str(tmp_path), *argv])

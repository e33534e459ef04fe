"""benchmarks/training_curves.py reads a comparison's logs into the right table; benchmarks/
shortcut_free_start.py tells a model that uses its source from one that does not; benchmarks/
score_intervals.py pairs test-set scores by seed."""

import importlib.util
import json
from pathlib import Path

import pytest

from fairseq_rskip.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_log(path: Path, valid, gnorms):
    lines = []
    for update, gnorm in gnorms:
        entry = {"epoch": 1, "loss": "9.0", "num_updates": str(update), "gnorm": str(gnorm)}
        lines.append(f"2026-01-01 00:00:00 | INFO | train_inner | {json.dumps(entry)}")
    for update, loss in valid:
        entry = {"epoch": 1, "valid_loss": str(loss), "valid_num_updates": str(update)}
        lines.append(f"2026-01-01 00:00:00 | INFO | valid | {json.dumps(entry)}")
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")


def rows(printed):
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in printed.splitlines() if line.startswith("| ") and "model" not in line}


def test_table_reads_the_curves_and_the_reference(tmp_path, capsys):
    curves = load_script("training_curves")
    runs = tmp_path / "runs"
    write_log(runs / "postln-d6-s1" / "train.log", [(100, 9.0), (200, 8.5), (400, 8.0)],
              [(100, 1.0), (200, 3.0), (300, 0.5), (400, 0.7)])
    write_log(runs / "espa-d6-s1" / "train.log", [(100, 9.5), (200, 8.6), (400, 8.4), (600, 8.5)],
              [(100, 6.0), (200, 8.0), (400, 5.0)])
    write_log(runs / "vanilla-d6-s1" / "train.log", [(100, 9.6), (200, 9.6)], [(100, 0.2)])
    figure = tmp_path / "curves.png"
    assert curves.main(["--out", str(tmp_path), "--depth", "6", "--archs", "postln", "espa",
                        "vanilla", "--budget", "200", "--at", "100", "400",
                        "--figure", str(figure)]) == 0
    table = rows(capsys.readouterr().out)
    assert table["Post-LN"] == ["9.000", "8.000", "8.000", "200 (1.00x)", "2", "0.6"]
    assert table["E-SPA"] == ["9.500", "8.400", "8.400", "400 (2.00x)", "7", "5"]
    assert table["vanilla"][3] == "not reached"
    assert table["vanilla"][1] == "-"
    assert figure.stat().st_size > 10_000


def test_seeds_from_several_folders_are_summarised_and_paired(tmp_path, capsys):
    """Each seed's run is measured against the reference's run of its own seed; cells are
    the mean with the range; --pair gives the per-seed differences and their t-interval."""
    curves = load_script("training_curves")
    first, second = tmp_path / "a", tmp_path / "b"
    for seed, folder, ref, espa, uspa in [(1, first, 8.0, (9.0, 8.1), (8.8, 7.9)),
                                          (2, second, 8.2, (9.2, 8.0), (8.9, 8.4))]:
        write_log(folder / "runs" / f"postln-d6-s{seed}" / "train.log", [(100, 9.5), (200, ref)], [(100, 1.0)])
        write_log(folder / "runs" / f"espa-d6-s{seed}" / "train.log", list(zip((100, 200), espa)), [(100, 5.0)])
        write_log(first / "runs" / f"uspa-d6-s{seed}" / "train.log", list(zip((100, 200), uspa)), [(100, 4.0)])
    assert curves.main(["--out", str(first), str(second), "--seeds", "1", "2", "--depth", "6",
                        "--archs", "espa", "uspa", "--budget", "200", "--at", "100", "200",
                        "--pair", "espa", "uspa"]) == 0
    printed = capsys.readouterr().out
    table = rows(printed.split("paired by seed")[0])
    assert table["E-SPA"][:3] == ["9.100 (9.000-9.200)", "8.050 (8.000-8.100)", "8.050 (8.000-8.100)"]
    assert table["E-SPA"][3] == "no/200 (per seed)"  # 8.1 > 8.0 (seed 1), 8.0 <= 8.2 (seed 2)
    assert table["U-SPA"][3] == "200/no (per seed)"
    paired = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
              for line in printed.split("paired by seed")[1].splitlines() if line.startswith("| 1") or line.startswith("| 2")}
    assert paired["100"][0] == "+0.250" and paired["100"][2] == "+0.200, +0.300"
    # t(0.975, 1) = 12.706, s = 0.0707: half width 12.706 * 0.0707 / sqrt(2) = 0.635
    assert paired["100"][1] == "-0.385 to +0.885"
    assert paired["200"][0] == "-0.100" and paired["200"][2] == "+0.200, -0.400"
    # several pairs, each its own table
    assert curves.main(["--out", str(first), str(second), "--seeds", "1", "2", "--depth", "6",
                        "--archs", "espa", "uspa", "--budget", "200", "--at", "200",
                        "--pair", "espa", "uspa", "--pair", "uspa", "postln"]) == 0
    printed = capsys.readouterr().out
    assert "E-SPA - U-SPA, validation loss, paired by seed" in printed
    assert "U-SPA - Post-LN, validation loss, paired by seed" in printed
    assert "| 200 | +0.050 | " in printed  # U-SPA - Post-LN at 200: (7.9 - 8.0 + 8.4 - 8.2) / 2


def test_table_refuses_a_reference_without_its_budget(tmp_path):
    from fairseq_rskip.errors import UserError

    curves = load_script("training_curves")
    write_log(tmp_path / "runs" / "postln-d6-s1" / "train.log", [(100, 9.0)], [])
    with pytest.raises(UserError, match="no validation at update 600"):
        curves.main(["--out", str(tmp_path), "--depth", "6", "--archs", "postln", "--budget", "600"])


def test_source_swap_separates_a_model_that_ignores_its_source(tmp_path, data_bin):
    """A model whose cross-attention gain is 0 (the shaped models at start) loses nothing with
    another sentence's source; once the gain is set, the source matters."""
    import torch

    start = load_script("shortcut_free_start")

    class Opts:
        layers, batches, max_tokens, seed, checkpoints = 2, 1, 512, 1, {}

    Opts.data = str(data_bin)
    stats, bias, lengths = start.measure("espa", Opts, [])
    assert stats["bits"] == pytest.approx(stats["bits, other source"], abs=1e-6)
    assert set(bias) == {1, 2}
    assert stats["gnorm cross-attention"] == 0.0 and stats["gnorm encoder layers"] == 0.0
    assert stats["cross-attention gains"] == (0.0, 0.0, 2)

    from fairseq_rskip.tools.common.modelbuild import build_variant
    from fairseq_rskip.variants import VARIANTS

    from fairseq_rskip.tools.common.modelbuild import data_bin_batches

    flags = [*start.SIZE, "--encoder-layers", "2", "--decoder-layers", "2"]
    task, _ = data_bin_batches(str(data_bin), "transformer_espa_tiny", "valid", 512, 1, extra=flags)
    model, _ = build_variant(VARIANTS["espa"], "tiny", flags, dictionary=task.source_dictionary,
                             tgt_dictionary=task.target_dictionary, seed=1)
    state = model.state_dict()
    for key in state:
        if key.endswith("branch_gain"):
            state[key] = torch.tensor(1.0)
    path = tmp_path / "gain1.pt"
    torch.save({"model": state}, path)
    Opts.checkpoints = {"espa": str(path)}
    stats, _, _ = start.measure("espa", Opts, [])
    assert abs(stats["bits"] - stats["bits, other source"]) > 1e-3
    assert stats["cross-attention gains"] == (1.0, 1.0, 2)
    assert stats["gnorm encoder layers"] > 0.0


def test_attention_to_first_reads_the_shaped_kernel_at_initialisation():
    """E-SPA at initialisation (W_Q = 0): each decoder layer's attention rows are
    D_l softmax(B_l), whatever the tokens, so the share of position 0 is
    softmax(B_l)[t, 0], averaged over the target's real positions t >= 1."""
    import torch

    from conftest import build_model, make_dictionary, sample_batch

    first = load_script("attention_to_first")
    d = make_dictionary()
    model = build_model("transformer_espa_tiny", "--dropout", "0", dictionary=d)
    src, lengths, prev = sample_batch(d, tgt_len=9)
    target = torch.roll(prev, -1, dims=1)
    target[1, 6:] = d.pad()  # one shorter target
    batch = {"net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
             "target": target}
    shares = first.first_position_shares(model, [batch], d.pad())
    real = target[:, 1:].ne(d.pad())
    for layer, share in zip(model.decoder.layers, shares):
        bias = layer.self_attn._matrices_for(9, torch.device("cpu"))[0]
        per_position = bias[1:9].softmax(-1)[:, 0]  # t = 1..8
        expected = float((per_position.expand_as(real) * real).sum() / real.sum())
        assert share == pytest.approx(expected, rel=1e-5)
    assert shares[-1] > shares[0]  # the kernel's last layer is the nearest to rank one


def write_eval(path: Path, sacrebleu: float, chrf: float, translations) -> str:
    path.mkdir(parents=True)
    (path / "hyp.txt").write_text("\n".join(translations) + "\n", encoding="utf-8")
    record = {"sacrebleu": sacrebleu, "chrf": chrf, "translations": str(path / "hyp.txt")}
    (path / "eval.json").write_text(json.dumps(record), encoding="utf-8")
    return str(path / "eval.json")


def test_score_intervals_pairs_seeds_in_order(tmp_path, capsys):
    scores = load_script("score_intervals")
    base = [(3.0, 18.0), (5.0, 20.0), (4.0, 19.0)]
    system = [(2.0, 17.0), (3.0, 19.0), (4.0, 18.5)]
    items = [f"base={write_eval(tmp_path / f'b{k}', b, c, ['a', 'b', 'a'])}" for k, (b, c) in enumerate(base)]
    items += [f"sys={write_eval(tmp_path / f's{k}', b, c, ['x', 'x', 'x'])}" for k, (b, c) in enumerate(system)]
    argv = [a for item in items for a in ("--eval", item)] + ["--pair", "sys", "base"]
    assert scores.main(argv) == 0
    printed = capsys.readouterr().out
    table = rows(printed.split("\n\n")[0])
    assert table["base"] == ["3", "4.00 (3.00-5.00)", "19.00 (18.00-20.00)", "2 (2-2)"]
    assert table["sys"][3] == "1 (1-1)"
    # sacreBLEU differences -1, -2, 0: mean -1, sd 1, t(0.975, 2) = 4.303 -> half-width 2.48
    bleu = [line for line in printed.splitlines() if line.startswith("| sacrebleu")][0]
    assert "-1.00, -2.00, +0.00" in bleu and "-1.00 (-3.48 to +1.48)" in bleu
    assert "0.67, 0.60, 1.00" in bleu


def test_score_intervals_refuses_unequal_pairs(tmp_path, capsys):
    scores = load_script("score_intervals")
    a = write_eval(tmp_path / "a", 1.0, 10.0, ["a"])
    b = write_eval(tmp_path / "b", 2.0, 11.0, ["b"])
    argv = ["--eval", f"a={a}", "--eval", f"a={a}", "--eval", f"b={b}", "--pair", "a", "b"]
    with pytest.raises(UserError, match="pairs need as many of each"):
        scores.main(argv)


def test_query_gradients_are_those_of_the_mean_cross_entropy_written_out():
    """||dL/dW_Q|| per self-attention layer, L the mean token cross-entropy over the batches,
    against torch.autograd.grad of the loss retyped here; a second call gives the same (no
    gradient left over from the first)."""
    import torch

    from conftest import build_model, make_dictionary, sample_batch

    grads = load_script("query_gradients")
    d = make_dictionary()
    model = build_model("transformer_uspa_tiny", "--dropout", "0.3", "--cross-attention-gain-init", "0.3",
                        dictionary=d)  # the encoder reachable at start: every W_Q gets a gradient
    batches = []
    for seed, length in ((0, 7), (1, 11)):
        src, lengths, prev = sample_batch(d, tgt_len=length, seed=seed)
        target = torch.roll(prev, -1, dims=1)
        target[0, length - 2:] = d.pad()
        batches.append({"net_input": {"src_tokens": src, "src_lengths": lengths, "prev_output_tokens": prev},
                        "target": target})
    norms = grads.query_gradient_norms(model, batches, d.pad())
    assert not model.training and all(p.grad is None for p in model.parameters())

    weights = [layer.self_attn.q_proj.weight for layer in model.encoder.layers] + \
              [layer.self_attn.q_proj.weight for layer in model.decoder.layers]
    total, tokens = 0.0, 0
    for b in batches:
        logp = torch.log_softmax(model(**b["net_input"])[0].float(), -1)
        real = b["target"].ne(d.pad())
        total = total - logp.gather(-1, b["target"].unsqueeze(-1)).squeeze(-1)[real].sum()
        tokens += int(real.sum())
    expected = [float(g.norm()) for g in torch.autograd.grad(total / tokens, weights)]
    layers = len(model.encoder.layers)
    assert norms["encoder"] == pytest.approx(expected[:layers], rel=1e-4)
    assert norms["decoder"] == pytest.approx(expected[layers:], rel=1e-4)
    assert all(n > 0 for n in norms["encoder"] + norms["decoder"])
    again = grads.query_gradient_norms(model, batches, d.pad())
    assert again["encoder"] + again["decoder"] == pytest.approx(norms["encoder"] + norms["decoder"], rel=1e-6)


def test_query_gradients_reads_the_interval_checkpoints_up_to_the_update_asked(tmp_path):
    grads = load_script("query_gradients")
    for name in ("checkpoint_1_25.pt", "checkpoint_2_200.pt", "checkpoint_3_225.pt", "checkpoint_last.pt",
                 "checkpoint_1_50.pt", "checkpoint_best.pt"):
        (tmp_path / name).write_bytes(b"")
    assert grads.interval_checkpoints(str(tmp_path), 200) == [
        (25, str(tmp_path / "checkpoint_1_25.pt")), (50, str(tmp_path / "checkpoint_1_50.pt")),
        (200, str(tmp_path / "checkpoint_2_200.pt"))]
    with pytest.raises(UserError, match="no checkpoint_E_U.pt with U <= 20"):
        grads.interval_checkpoints(str(tmp_path), 20)
    with pytest.raises(UserError, match="--run .*: no such folder"):
        grads.main(["--data", str(tmp_path), "--run", f"espa={tmp_path / 'missing'}"])
    with pytest.raises(UserError, match="--run takes NAME=DIR"):
        grads.main(["--data", str(tmp_path), "--run", str(tmp_path)])
    with pytest.raises(UserError, match="--data .*: no such data-bin folder"):
        grads.main(["--data", str(tmp_path / "missing"), "--run", f"espa={tmp_path}"])

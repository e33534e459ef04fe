"""Admin's profile as a file (Transformer-Clinic's profile.ratio.init): written by the run that
profiles, read by --admin-profile into the sublayers its indices name, refused when it does not
fit the model. Through fairseq-train: tests/test_cli.py."""

import logging

import pytest
import torch

from conftest import build_model, make_dictionary, sample_batch
from fairseq_rskip.analysis import modelbuild
from fairseq_rskip.errors import UserError
from fairseq_rskip.modules.admin_profile import PROFILE_FILE, format_profile, read_profile


def layers_flags(n, m):
    return ("--encoder-layers", str(n), "--decoder-layers", str(m))


def omegas(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(".omega")}


def parse(path):
    return [(int(i), float(v)) for i, v in (line.split() for line in path.read_text().splitlines())]


@pytest.fixture
def profiled(tmp_path):
    """A 3+2-layer Admin model profiled on its first training batch, with --save-dir tmp_path."""
    model, _ = modelbuild.build_model("transformer_admin_tiny", layers_flags(3, 2),
                                      dictionary=make_dictionary(), seed=1, save_dir=str(tmp_path))
    model.train()
    assert not (tmp_path / PROFILE_FILE).exists()
    model(*sample_batch())
    return model, tmp_path / PROFILE_FILE


def test_profiling_writes_clinics_file_into_the_save_dir(profiled):
    model, path = profiled
    rows = parse(path)
    assert [i for i, _ in rows] == list(range(1, 2 * 3 + 1)) + list(range(1, 3 * 2 + 1))
    values = [v for _, v in rows]
    expected = []
    for stack, names in (("encoder", ("self_attn", "final")), ("decoder", ("self_attn", "encoder_attn", "final"))):
        for layer in getattr(model, stack).layers:
            expected += [float(getattr(layer, f"{name}_layer_norm").omega.detach()[0]) for name in names]
    assert values == expected  # exactly: the file holds the float's shortest round-trip form
    assert values[0] == 1.0 and values[6] == 1.0 and values[5] > 1.2  # each stack starts at 1
    model(*sample_batch(seed=4))
    assert parse(path) == rows  # written once


def test_a_model_built_in_process_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_model("transformer_admin_tiny").train()
    model(*sample_batch())
    assert float(model.admin_profiled) == 1 and not list(tmp_path.rglob(PROFILE_FILE))


def test_a_model_of_another_seed_started_from_the_file_has_exactly_those_omega(profiled, caplog):
    first, path = profiled
    with caplog.at_level(logging.INFO, logger="fairseq_rskip"):
        other = build_model("transformer_admin_tiny", *layers_flags(3, 2), "--admin-profile", str(path), seed=7)
    assert float(other.admin_profiled) == 1  # marked at build: it never profiles
    assert f"read from {path}" in caplog.text
    mine, theirs = omegas(first), omegas(other)
    assert mine.keys() == theirs.keys() and len(mine) == 12
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not torch.equal(first.encoder.layers[0].fc1.weight, other.encoder.layers[0].fc1.weight)
    caplog.clear()
    other.train()
    with caplog.at_level(logging.INFO, logger="fairseq_rskip"):
        other(*sample_batch(seed=9))
    assert "profiled" not in caplog.text
    assert all(torch.equal(v, mine[k]) for k, v in omegas(other).items())


def test_a_model_started_from_its_own_profile_is_the_profiled_model(tmp_path):
    """Same seed, same first batch: reading the file gives the model profiling gave,
    and the same training forward (profiling ran on a copy of the random state)."""
    flags = [*layers_flags(3, 2), "--dropout", "0.1"]
    reference, _ = modelbuild.build_model("transformer_admin_tiny", flags, dictionary=make_dictionary(),
                                          seed=1, save_dir=str(tmp_path))
    torch.manual_seed(5)
    out_profiled = reference.train()(*sample_batch())[0]
    again = build_model("transformer_admin_tiny", *flags, "--admin-profile", str(tmp_path / PROFILE_FILE), seed=1)
    torch.manual_seed(5)
    out_from_file = again.train()(*sample_batch())[0]
    assert torch.equal(out_profiled, out_from_file)
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), again.state_dict().values()))


def clinic_file(path, enc_values, dec_values):
    """A profile written by hand the way Transformer-Clinic prints it (numpy floats)."""
    lines = [f"{i} {v}" for i, v in enumerate(enc_values, 1)] + [f"{i} {v}" for i, v in enumerate(dec_values, 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_hand_written_clinic_file_fills_the_sublayers_its_indices_name(tmp_path):
    # encoder: index 2l+1 self-attention, 2l+2 feed-forward; decoder: 3l+1, 3l+2 cross, 3l+3
    enc = [1.0, 1.25, 1.5, 1.75]
    dec = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    path = clinic_file(tmp_path / "profile.ratio.init", enc, dec)
    model = build_model("transformer_admin_tiny", *layers_flags(2, 2), "--admin-profile", str(path))
    expected = {}
    for l in range(2):
        expected[f"encoder.layers.{l}.self_attn_layer_norm.omega"] = enc[2 * l]
        expected[f"encoder.layers.{l}.final_layer_norm.omega"] = enc[2 * l + 1]
        expected[f"decoder.layers.{l}.self_attn_layer_norm.omega"] = dec[3 * l]
        expected[f"decoder.layers.{l}.encoder_attn_layer_norm.omega"] = dec[3 * l + 1]
        expected[f"decoder.layers.{l}.final_layer_norm.omega"] = dec[3 * l + 2]
    got = omegas(model)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(got[name], torch.full((64,), value)), name


def test_indices_written_as_floats_and_a_missing_final_newline_are_read(tmp_path):
    path = tmp_path / "p"
    path.write_text("1.0 1.0\n2.0 1.5\n\n1 1.0\n2 2.5\n3 3.5")  # one decoder layer
    model = build_model("transformer_admin_tiny", *layers_flags(1, 1), "--admin-profile", str(path))
    assert [float(v[0]) for v in omegas(model).values()] == [1.0, 1.5, 1.0, 2.5, 3.5]


def test_no_cross_attention_takes_two_decoder_lines_a_layer(tmp_path):
    path = clinic_file(tmp_path / "p", [1.0, 1.1], [1.0, 1.2, 1.3, 1.4])
    model = build_model("transformer_admin_tiny", *layers_flags(1, 2), "--no-cross-attention",
                        "--admin-profile", str(path))
    assert float(model.decoder.layers[1].final_layer_norm.omega.detach()[0]) == pytest.approx(1.4)


def test_the_files_text_is_clinics_format():
    assert format_profile({"encoder": [1.0, 1.3190397024154663], "decoder": [1.0, 2.5, 3.25]}) == (
        "1 1.0\n2 1.3190397024154663\n1 1.0\n2 2.5\n3 3.25\n")


def test_a_file_for_another_depth_is_refused_naming_the_file_and_the_counts(profiled, caplog):
    """The 3+2-layer profile for a 3+3-layer model: a warning at build (a checkpoint may
    still be loaded into the model), refused when the model would train from it."""
    first, path = profiled
    with caplog.at_level(logging.WARNING, logger="fairseq_rskip"):
        model = build_model("transformer_admin_tiny", *layers_flags(3, 3), "--admin-profile", str(path))
    message = (f"--admin-profile {path} has 12 lines (encoder 1..6, then decoder 1..6: a profile of "
               "3 encoder layers and 2 decoder layers), but this model (3 encoder and 3 decoder layers) "
               "needs 6 + 9 = 15 lines")
    assert message in caplog.text
    assert float(model.admin_profiled) == 0
    model.eval()
    model(*sample_batch())  # evaluation does not need the profile
    model.train()
    with pytest.raises(UserError) as err:
        model(*sample_batch())
    assert message in str(err.value) and "leave --admin-profile out to profile" in str(err.value)
    assert float(model.admin_profiled) == 0


def test_a_missing_file_is_refused_for_training_and_a_checkpoint_still_loads(profiled, tmp_path):
    """Generation and resuming load omega from the checkpoint: the file need not be there."""
    first, _ = profiled
    missing = tmp_path / "elsewhere" / PROFILE_FILE
    model = build_model("transformer_admin_tiny", *layers_flags(3, 2), "--admin-profile", str(missing))
    with pytest.raises(UserError, match=f"--admin-profile {missing}: cannot read it \\(No such file"):
        model.train()(*sample_batch())
    model.load_state_dict(first.state_dict())
    model(*sample_batch())  # profiled as the checkpoint says: trains
    assert all(torch.equal(v, omegas(first)[k]) for k, v in omegas(model).items())


COUNTS, LAYERS = {"encoder": 2, "decoder": 3}, {"encoder": 1, "decoder": 1}


@pytest.mark.parametrize("text,message", [
    ("1 1.0\n2 1.2\n1 1.0\n3 1.3\n2 1.4\n",
     r"line 4: index 3 where decoder index 2 belongs; this model \(1 encoder and 1 decoder layers\) "
     r"needs 2 \+ 3 = 5 lines"),
    ("1 1.0\n2 1.2\n1 1.0\n2 1.3\n", r"has 4 lines \(encoder 1..2, then decoder 1..2: a profile of "
     r"1 encoder layers and 2 decoder sublayers\), but this model"),
    ("1 1.0\n2\n", r"line 2: expected 'INDEX VALUE', got '2'"),
    ("1 1.0\n2 x\n", r"line 2: value 'x' is not a number"),
    ("1 1.0\n2.5 1.0\n", r"line 2: index 2.5 is not a whole number"),
    ("1 1.0\n2 0\n", r"line 2: omega 0 is not a finite number > 0"),
    ("1 1.0\n2 nan\n", r"line 2: omega nan is not a finite number > 0"),
])
def test_malformed_files_are_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "p"
    path.write_text(text)
    with pytest.raises(UserError, match=f"--admin-profile {path}.*{message}"):
        read_profile(path, COUNTS, LAYERS)

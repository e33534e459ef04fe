"""Admin's profile as a file (Transformer-Clinic's profile.ratio.init): written by the run that
profiles, read by --admin-profile into the sublayers its indices name, refused when the model is
built if it does not fit; the profile kept in buffers that no optimizer copies, and the guard
after the first update. Through fairseq-train: tests/test_cli.py, tests/test_half_precision_training.py."""

import copy
import logging

import pytest
import torch

from conftest import build_model, make_dictionary, sample_batch
from fairseq_rskip.tools.common import modelbuild
from fairseq_rskip.errors import ModelBuildError, UserError
from fairseq_rskip.models.architectures import DEFAULTS_VERSION_ATTR
from fairseq_rskip.modules.admin_profile import (
    PROFILE_FILE,
    PROFILE_TEXT_ATTR,
    admin_omegas,
    admin_residual_norms,
    format_profile,
    read_profile,
)


def layers_flags(n, m):
    return ("--encoder-layers", str(n), "--decoder-layers", str(m))


def omegas(model):
    """Admin's omega of every sublayer, by the sublayer's name."""
    return admin_omegas(model.state_dict())


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
            expected += [float(getattr(layer, f"{name}_layer_norm").skip_vector().detach()[0]) for name in names]
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
        expected[f"encoder.layers.{l}.self_attn_layer_norm"] = enc[2 * l]
        expected[f"encoder.layers.{l}.final_layer_norm"] = enc[2 * l + 1]
        expected[f"decoder.layers.{l}.self_attn_layer_norm"] = dec[3 * l]
        expected[f"decoder.layers.{l}.encoder_attn_layer_norm"] = dec[3 * l + 1]
        expected[f"decoder.layers.{l}.final_layer_norm"] = dec[3 * l + 2]
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
    assert float(model.decoder.layers[1].final_layer_norm.skip_vector().detach()[0]) == pytest.approx(1.4)


def test_the_files_text_is_clinics_format():
    assert format_profile({"encoder": [1.0, 1.3190397024154663], "decoder": [1.0, 2.5, 3.25]}) == (
        "1 1.0\n2 1.3190397024154663\n1 1.0\n2 2.5\n3 3.25\n")


def build_refused(path, *flags):
    """The error building a 3+2-layer Admin model with ``--admin-profile path`` raises."""
    with pytest.raises(ModelBuildError) as err:
        build_model("transformer_admin_tiny", *layers_flags(3, 2), *flags, "--admin-profile", str(path))
    assert isinstance(err.value, (UserError, SystemExit))
    assert err.value.code == f"error: {err.value}" and "\n" not in err.value.code
    return str(err.value)


def test_a_file_for_another_depth_is_refused_when_the_model_is_built(profiled):
    _, path = profiled  # 3+2 layers, for a 3+3-layer model
    with pytest.raises(ModelBuildError) as err:
        build_model("transformer_admin_tiny", *layers_flags(3, 3), "--admin-profile", str(path))
    assert str(err.value) == (
        f"--admin-profile {path} has 12 lines (encoder 1..6, then decoder 1..6: a profile of "
        "3 encoder layers and 2 decoder layers), but this model (3 encoder and 3 decoder layers) "
        "needs 6 + 9 = 15 lines: encoder indices 1..6, then decoder indices 1..9")


def ten_lines(values=None):
    """A well-formed profile of a 3+2-layer model: 6 encoder and 6 decoder lines."""
    values = values or [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    return [f"{i} {v}" for i, v in enumerate(values[:6], 1)] + [f"{i} {v}" for i, v in enumerate(values[6:], 1)]


def lines_with(line_no, text):
    lines = ten_lines()
    lines[line_no - 1] = text
    return "\n".join(lines) + "\n"


# Each malformed file, as written, and what the one error line says (after the file's name).
MALFORMED = {
    "empty": ("", "has 0 lines, but this model"),
    "not a number": (lines_with(3, "3 abc"), ", line 3: value 'abc' is not a number"),
    "negative": (lines_with(4, "4 -1.2"), ", line 4: omega -1.2 is not a finite number > 0"),
    "zero": (lines_with(4, "4 0"), ", line 4: omega 0 is not a finite number > 0"),
    "nan": (lines_with(5, "5 nan"), ", line 5: omega nan is not a finite number > 0"),
    "inf": (lines_with(5, "5 inf"), ", line 5: omega inf is not a finite number > 0"),
    "duplicated index": (lines_with(2, "1 1.1"), ", line 2: index 1 where encoder index 2 belongs"),
    "one line short": ("\n".join(ten_lines()[:-1]) + "\n", "has 11 lines (encoder 1..6, then decoder 1..5"),
    "one line more": ("\n".join(ten_lines() + ["7 2.2"]) + "\n", "has 13 lines (encoder 1..6, then decoder 1..7"),
    "a comment": ("# profile of run 1\n" + "\n".join(ten_lines()) + "\n", ", line 1: a comment; the file holds only"),
    "three columns": (lines_with(6, "6 1.5 0.2"), ", line 6: expected 'INDEX VALUE', got '6 1.5 0.2'"),
    "index not whole": (lines_with(2, "2.5 1.1"), ", line 2: index 2.5 is not a whole number"),
    "binary": (b"1 1.0\n2 \xff\xfe\x00\x01\n", ", line 2: not text (byte 0xff is not UTF-8)"),
    "missing": (None, ": cannot read it (No such file or directory)"),
    "a directory": ("DIR", ": cannot read it (Is a directory)"),
}


def write_case(case, tmp_path):
    """The file of a MALFORMED case, written into tmp_path; its path."""
    content, _ = MALFORMED[case]
    path = tmp_path / "profile.ratio.init"
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    return path


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_file_is_refused_in_one_line_naming_file_line_and_fault(case, tmp_path):
    path, (_, expected) = write_case(case, tmp_path), MALFORMED[case]
    message = build_refused(path)
    assert message.startswith(f"--admin-profile {path}") and expected in message, message


def fairseq_train_in_process(data_bin, save_dir, *flags):
    """fairseq-train's main on the tiny corpus, in this process."""
    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq_cli import train as fairseq_train

    from conftest import train_command

    argv = [str(a) for a in train_command(data_bin, "transformer_admin_tiny", save_dir, 1)[1:]]
    args = options.parse_args_and_arch(options.get_training_parser(), [*argv, "--cpu", *map(str, flags)])
    fairseq_train.main(convert_namespace_to_omegaconf(args))


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_fairseq_train_stops_on_a_malformed_file_before_it_loads_data(case, data_bin, tmp_path, caplog):
    """Each malformed file ends fairseq-train's main with SystemExit("error: ...") (Python
    prints the line and exits with status 1) while the model is built, before any split
    is loaded. The real command: tests/test_cli.py."""
    path, (_, expected) = write_case(case, tmp_path), MALFORMED[case]
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as err:
        fairseq_train_in_process(data_bin, tmp_path / "run", "--encoder-layers", "3", "--decoder-layers", "2",
                                 "--admin-profile", path)
    assert isinstance(err.value.code, str) and err.value.code.startswith(f"error: --admin-profile {path}")
    assert expected in err.value.code and "\n" not in err.value.code
    assert "examples" not in caplog.text and "dictionary:" in caplog.text  # the task was set up, no data


def test_a_leading_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "p"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(ten_lines()) + "\n").encode())
    model = build_model("transformer_admin_tiny", *layers_flags(3, 2), "--admin-profile", str(path))
    assert [float(v[0]) for v in omegas(model).values()] == pytest.approx(
        [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0])


def test_the_arguments_keep_the_files_text_so_a_checkpoint_builds_without_the_file(tmp_path):
    """A checkpoint's saved arguments carry the text: its model builds once the file is
    gone; arguments saved by version 2 (no text) do not read the file again."""
    path = tmp_path / "p"
    path.write_text("\n".join(ten_lines()) + "\n")
    model, args = modelbuild.build_model("transformer_admin_tiny", [*layers_flags(3, 2), "--admin-profile", str(path)],
                                         dictionary=make_dictionary())
    assert getattr(args, PROFILE_TEXT_ATTR) == format_profile(
        {"encoder": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5], "decoder": [1.0, 1.2, 1.4, 1.6, 1.8, 2.0]})
    path.unlink()
    from fairseq.models import ARCH_MODEL_REGISTRY

    task = modelbuild.DummyTask(make_dictionary(), make_dictionary())
    again = ARCH_MODEL_REGISTRY[args.arch].build_model(args, task)
    assert all(torch.equal(v, omegas(model)[k]) for k, v in omegas(again).items())
    assert float(again.admin_profiled) == 1

    saved_by_version_2 = copy.copy(args)
    delattr(saved_by_version_2, PROFILE_TEXT_ATTR)
    setattr(saved_by_version_2, DEFAULTS_VERSION_ATTR, 2)
    old = ARCH_MODEL_REGISTRY[args.arch].build_model(saved_by_version_2, task)
    assert float(old.admin_profiled) == 0  # its checkpoint's weights bring omega and the flag
    old.load_state_dict(model.state_dict())
    assert float(old.admin_profiled) == 1
    assert all(torch.equal(v, omegas(model)[k]) for k, v in omegas(old).items())


def old_layout(state):
    """A state dict as Admin checkpoints of earlier versions hold it: one parameter
    ``NAME.omega`` per sublayer, the whole omega."""
    state = dict(state)
    for name, omega in admin_omegas(state).items():
        del state[f"{name}.omega_init"], state[f"{name}.omega_delta"]
        state[f"{name}.omega"] = omega
    return state


def test_checkpoints_of_earlier_versions_load_with_their_omega(profiled):
    trained, _ = profiled
    with torch.no_grad():  # as after training: omega_delta no longer 0
        for norm in admin_residual_norms(trained):
            norm.omega_delta.add_(0.01)
    old = old_layout(trained.state_dict())
    assert not any(k.endswith("omega_init") for k in old)
    model = build_model("transformer_admin_tiny", *layers_flags(3, 2), seed=3)
    model.load_state_dict(old)
    assert omegas(model).keys() == omegas(trained).keys()
    assert all(torch.equal(v, omegas(trained)[k]) for k, v in omegas(model).items())
    assert all(float(n.omega_delta.detach().abs().max()) == 0 for n in admin_residual_norms(model))
    assert float(model.admin_profiled) == 1
    model.eval(), trained.eval()
    assert torch.equal(model(*sample_batch())[0], trained(*sample_batch())[0])


def test_the_gradient_of_omega_delta_is_that_of_omega(profiled):
    """omega = omega_init + omega_delta trains as one parameter omega would: same gradient."""
    model, _ = profiled
    norm = model.encoder.layers[1].final_layer_norm
    x, residual = torch.randn(5, 2, 64), torch.randn(5, 2, 64)
    omega = norm.skip_vector().detach().clone().requires_grad_()
    by_hand = torch.nn.functional.layer_norm(torch.addcmul(x, residual, omega), (64,), norm.weight, norm.bias, norm.eps)
    (by_hand ** 2).sum().backward()
    ours = norm(x.clone(), residual)
    (ours ** 2).sum().backward()
    assert torch.equal(ours, by_hand)
    assert torch.equal(norm.omega_delta.grad, omega.grad)


def copies_in_two_groups(model):
    """float32 copies of the model's trainable parameters in two groups (decay / none), as
    an optimizer wrapper may hold them, made before the model profiles."""
    params = [p for p in model.parameters() if p.requires_grad]
    copies = [torch.nn.Parameter(p.detach().float().clone()) for p in params]
    decay = [c for c, p in zip(copies, params) if p.dim() > 1]
    rest = [c for c, p in zip(copies, params) if p.dim() <= 1]
    return params, copies, [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}]


def step_through_copies(model, params, copies, optimizer):
    for p, c in zip(params, copies):
        c.grad = p.grad.float()
    optimizer.step()
    with torch.no_grad():
        for p, c in zip(params, copies):
            p.copy_(c)  # the wrapper writes its copies back over the model
    model.zero_grad()


def test_copies_made_before_profiling_in_two_groups_keep_the_profile():
    """A wrapper's float32 copies, built before the first batch profiles, in two parameter
    groups: after 3 updates omega is within 0.1 % of training the model's own tensors."""
    runs = []
    for through_copies in (False, True):
        model = build_model("transformer_admin_tiny", *layers_flags(3, 2), seed=1).train()
        params, copies, groups = copies_in_two_groups(model)
        if through_copies:
            optimizer = torch.optim.AdamW(groups, lr=1e-3)
        else:
            own = {id(c): p for c, p in zip(copies, params)}
            optimizer = torch.optim.AdamW([{**g, "params": [own[id(c)] for c in g["params"]]} for g in groups], lr=1e-3)
        for update in range(3):
            torch.manual_seed(update)
            model(*sample_batch(seed=update))[0].float().pow(2).mean().backward()
            if through_copies:
                step_through_copies(model, params, copies, optimizer)
            else:
                optimizer.step()
                model.zero_grad()
        runs.append(omegas(model))
    own, copied = runs
    assert max(float(v.max()) for v in own.values()) > 1.2  # profiled
    for name, omega in own.items():
        assert float(((copied[name] - omega).abs() / omega).max()) <= 1e-3, name


def test_two_admin_models_in_one_process_keep_their_own_profiles():
    first = build_model("transformer_admin_tiny", *layers_flags(3, 2), seed=1).train()
    second = build_model("transformer_admin_tiny", *layers_flags(3, 2), seed=2).train()
    optimizers = [torch.optim.Adam(m.parameters(), lr=0.0) for m in (first, second)]
    first(*sample_batch(seed=0))
    profile_first = omegas(first)
    second(*sample_batch(seed=5))
    profile_second = omegas(second)
    assert any(not torch.equal(profile_first[k], v) for k, v in profile_second.items())
    for model, optimizer in zip((first, second), optimizers):
        model(*sample_batch(seed=7))[0].float().sum().backward()
        optimizer.step()
    assert all(torch.equal(v, profile_first[k]) for k, v in omegas(first).items())
    assert all(torch.equal(v, profile_second[k]) for k, v in omegas(second).items())


def profiled_with_lr(lr=1e-3):
    model = build_model("transformer_admin_tiny", *layers_flags(3, 2), seed=1).train()
    model.args.lr = [lr]
    model(*sample_batch())
    return model


def test_the_guard_passes_after_an_ordinary_update():
    model = profiled_with_lr()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.set_num_updates(0)
    model(*sample_batch(seed=1))[0].float().sum().backward()
    optimizer.step()
    model.set_num_updates(1)  # checks, once
    with torch.no_grad():
        model.encoder.layers[0].final_layer_norm.omega_init.fill_(1.0)
    model.set_num_updates(2)  # nothing pending


def test_the_guard_stops_a_run_whose_profile_was_rewritten():
    model = profiled_with_lr()
    target = model.encoder.layers[1].self_attn_layer_norm
    with torch.no_grad():
        target.omega_init.fill_(1.0)  # a path that put the buffer back to its build value
    with pytest.raises(UserError, match=r"after update 1, encoder\.layers\.1\.self_attn_layer_norm\.omega_init "
                       r"is 1 where the profile set 1\.\d+: something outside the model rewrote"):
        model.set_num_updates(1)


def test_the_guard_stops_a_run_whose_omega_moved_more_than_a_few_steps():
    model = profiled_with_lr(1e-3)
    with torch.no_grad():
        model.decoder.layers[0].encoder_attn_layer_norm.omega_delta.fill_(-0.3)  # omega back near 1
    with pytest.raises(UserError, match=r"after update 1, omega of decoder\.layers\.0\.encoder_attn_layer_norm "
                       r"moved 0\.3 from its profile .* more than 4 optimizer steps of lr 0\.001"):
        model.set_num_updates(1)


def test_loading_a_checkpoint_cancels_the_guard(profiled):
    trained, _ = profiled
    model = profiled_with_lr()
    model.load_state_dict(trained.state_dict())  # omegas from elsewhere: nothing to check
    model.set_num_updates(5)

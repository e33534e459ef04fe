"""End to end through fairseq's own command-line tools on a tiny generated corpus:
preprocess, train, generate, resume, interactive, checkpoint averaging, hub loading."""

import csv
import re
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import USER_DIR, json_logs, run, train, train_command
from fairseq_rskip.models.architectures import DEFAULTS_VERSION
from fairseq_rskip.modules.admin_profile import admin_omegas

# Stock fairseq commands end to end. The fast loop (-m "not slow") keeps one run of each:
# train and resume, generate and interactive (rSkip), checkpoint averaging (AdaNorm), hub
# loading (Pre-LN without warm-up); the other architectures and checks are slow.
def quick_first(archs, quick):
    """``archs`` as parameters, every one but ``quick`` marked slow."""
    return [pytest.param(a, marks=() if a == quick else pytest.mark.slow) for a in archs]


ARCHS = {
    "transformer_rskip_tiny": ["--eval-bleu", "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric"],
    "transformer_adanorm_tiny": ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4"],
    "transformer_prenorm_nowarmup_tiny": ["--lr-scheduler", "inverse_sqrt_nowarmup", "--decay-timescale", "50"],
    "transformer_deepnorm_tiny": ["--lr-scheduler", "inverse_sqrt_nowarmup", "--decay-timescale", "50"],
    "transformer_admin_tiny": ["--encoder-layers", "3"],
    "transformer_espa_tiny": ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4"],
    # baselines with parameters of new kinds (every family resumes and decodes in
    # tests/test_half_precision_training.py): one scalar shared by a layer's sublayers
    # (ReZero, also averaged below), NormFormer's extra modules
    "transformer_rezero_tiny": ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4",
                                "--residual-gain-init", "0.1"],
    "transformer_normformer_tiny": ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4", "--scale-resids"],
}
ADMIN_LOG = "Admin: omega of the encoder sublayers profiled on the first training batch"


class Trained(dict):
    """arch -> (save_dir, first run, resumed run): the architecture trained for 6 updates,
    then resumed to 10, when a test first asks for it."""

    def __init__(self, data_bin, tmp_path_factory):
        super().__init__()
        self.data_bin, self.tmp_path_factory = data_bin, tmp_path_factory

    def __missing__(self, arch):
        save_dir = self.tmp_path_factory.mktemp(arch)
        first = train(self.data_bin, arch, save_dir, 6, *ARCHS[arch])
        resumed = train(self.data_bin, arch, save_dir, 10, *ARCHS[arch])
        self[arch] = (save_dir, first, resumed)
        return self[arch]


@pytest.fixture(scope="module")
def trained(data_bin, tmp_path_factory):
    return Trained(data_bin, tmp_path_factory)


@pytest.mark.parametrize("arch", quick_first(sorted(ARCHS), "transformer_rskip_tiny"))
def test_train_and_resume(trained, arch):
    save_dir, first, resumed = trained[arch]
    first_updates = [r["num_updates"] for r in json_logs(first)]
    assert first_updates[0] == "1" and first_updates[-1] == "6"
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 6 updates\)", resumed.stderr + resumed.stdout)
    resumed_updates = [int(r["num_updates"]) for r in json_logs(resumed)]
    assert resumed_updates and resumed_updates[0] == 7 and resumed_updates[-1] == 10
    assert (save_dir / "checkpoint_last.pt").is_file()
    state = torch.load(save_dir / "checkpoint_last.pt")  # weights_only=True, the torch default
    assert state["cfg"]["model"].arch == arch
    assert state["optimizer_history"][-1]["num_updates"] == 10


@pytest.mark.slow
def test_no_warmup_scheduler_starts_at_peak(trained):
    _, first, _ = trained["transformer_prenorm_nowarmup_tiny"]
    lrs = [float(r["lr"]) for r in json_logs(first)]
    assert lrs[0] == pytest.approx(2e-3 * (50 / 51) ** 0.5, rel=1e-3)  # logged after update 1
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("arch", quick_first(sorted(ARCHS), "transformer_rskip_tiny"))
def test_generate(trained, data_bin, arch):
    save_dir = trained[arch][0]
    proc = run([
        "fairseq-generate", data_bin, "--user-dir", USER_DIR, "--path", save_dir / "checkpoint_last.pt",
        "--beam", "4", "--max-tokens", "500",
        # fairseq drops a last batch smaller than this multiple (default 8; facebookresearch/fairseq#5036)
        "--required-batch-size-multiple", "1",
    ])
    assert "Translated 20 sentences" in proc.stdout + proc.stderr
    assert len(re.findall(r"^H-\d+\t", proc.stdout, flags=re.M)) == 20
    assert re.search(r"BLEU4 = \d", proc.stdout)


@pytest.mark.parametrize("arch", quick_first(["transformer_rskip_tiny", "transformer_espa_tiny"], "transformer_rskip_tiny"))
def test_interactive(trained, data_bin, arch):
    save_dir = trained[arch][0]
    proc = subprocess.run(
        [f"{sys.prefix}/bin/fairseq-interactive", str(data_bin), "--user-dir", str(USER_DIR),
         "--path", str(save_dir / "checkpoint_last.pt"), "--beam", "2",
         "--source-lang", "src", "--target-lang", "tgt"],
        input="the cat sees a dog\nbig red house\n", capture_output=True, text=True, check=True,
    )
    assert len(re.findall(r"^H-\d+\t", proc.stdout, flags=re.M)) == 2


@pytest.mark.parametrize("arch", quick_first(["transformer_adanorm_tiny", "transformer_admin_tiny", "transformer_espa_tiny",
                                              "transformer_rezero_tiny", "transformer_normformer_tiny"],
                                             "transformer_adanorm_tiny"))
def test_average_checkpoints_then_generate(trained, data_bin, tmp_path, arch):
    save_dir = trained[arch][0]
    epochs = sorted(save_dir.glob("checkpoint[0-9]*.pt"))
    assert len(epochs) >= 2
    out = tmp_path / "avg.pt"
    run([sys.executable, "-m", "fairseq_rskip.tools.average_checkpoints.cli", "--inputs", save_dir,
         "--num-epoch-checkpoints", "2", "--output", out])
    averaged = torch.load(out)["model"]
    last_two = [torch.load(p)["model"] for p in sorted(epochs, key=lambda p: int(p.stem[10:]))[-2:]]
    key = "encoder.layers.0.fc1.weight"
    torch.testing.assert_close(averaged[key], (last_two[0][key] + last_two[1][key]) / 2)
    if arch == "transformer_admin_tiny":  # omega averaged, still marked as profiled
        for key in ("decoder.layers.1.final_layer_norm.omega_init", "decoder.layers.1.final_layer_norm.omega_delta"):
            torch.testing.assert_close(averaged[key], (last_two[0][key] + last_two[1][key]) / 2)
        assert float(averaged["admin_profiled"]) == 1.0
    if arch == "transformer_rezero_tiny":  # one alpha per layer, under each sublayer's name
        names = [f"decoder.layers.1.{n}.branch_gain"
                 for n in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm")]
        assert all(torch.equal(averaged[n], averaged[names[0]]) for n in names)
        torch.testing.assert_close(averaged[names[0]], (last_two[0][names[0]] + last_two[1][names[0]]) / 2)
        assert float(averaged[names[0]]) != 0.1  # trained
    proc = run(["fairseq-generate", data_bin, "--user-dir", USER_DIR, "--path", out, "--beam", "2",
                "--required-batch-size-multiple", "1"])
    assert "Translated 20 sentences" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_admin_profiles_once_inside_fairseq_train_and_keeps_omega(trained, data_bin):
    """Profiled on the first batch of the first run, before the first update; the
    resumed run, fairseq's checkpoint loading and later training forwards keep omega."""
    from fairseq import checkpoint_utils

    save_dir, first, resumed = trained["transformer_admin_tiny"]
    assert (first.stdout + first.stderr).count(ADMIN_LOG) == 1
    assert ADMIN_LOG not in resumed.stdout + resumed.stderr
    state = torch.load(save_dir / "checkpoint_last.pt")["model"]
    assert float(state["admin_profiled"]) == 1.0
    omegas = admin_omegas(state)
    assert len(omegas) == 3 * 2 + 2 * 3
    # the first sublayer of a stack starts at 1, deeper ones well above; ten Adam
    # steps of lr 2e-3 move an entry by about 0.02 at most
    assert abs(float(omegas["encoder.layers.0.self_attn_layer_norm"].mean()) - 1) < 0.05
    assert float(omegas["encoder.layers.2.final_layer_norm"].mean()) > 1.2
    assert all(0 < float(state[f"{k}.omega_delta"].abs().max()) <= 10 * 2e-3 for k in omegas)  # trained
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(save_dir / "checkpoint_last.pt")])
    model = models[0]
    loaded = admin_omegas(model.state_dict())
    assert loaded.keys() == omegas.keys() and all(torch.equal(loaded[k], omegas[k]) for k in omegas)
    model.train()
    d = task.source_dictionary
    src = torch.tensor([[d.index("the"), d.index("cat"), d.eos()]])
    model(src, torch.tensor([3]), torch.tensor([[d.eos(), d.index("eht" + "x")]]))
    assert all(torch.equal(v, loaded[k]) for k, v in admin_omegas(model.state_dict()).items())


def assert_refused_before_data(proc, message):
    """fairseq-train stopped while building the model: exit status 1, one ``error:`` line
    holding ``message``, no traceback, no dataset loaded."""
    out = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 1, out[-3000:]
    assert len(errors) == 1 and message in errors[0], out[-3000:]
    assert "Traceback" not in out and " examples" not in out  # fairseq logs each split it loads


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing", "not a number", "a rule between flags"])
def test_fairseq_train_refuses_a_bad_admin_profile_in_one_line(data_bin, tmp_path, case):
    profile = tmp_path / "profile.ratio.init"
    if case == "not a number":
        profile.write_text("1 1.0\n2 x\n")
    extra = ["--admin-init", "logn"] if case == "a rule between flags" else []
    proc = run([*train_command(data_bin, "transformer_admin_tiny", tmp_path / "run", 1),
                "--admin-profile", profile, *extra], check=False)
    expected = {"missing": f"--admin-profile {profile}: cannot read it (No such file or directory)",
                "not a number": f"--admin-profile {profile}, line 2: value 'x' is not a number",
                "a rule between flags": "--admin-profile and --admin-init logn both set Admin's initial "
                                        "omega: leave one out"}[case]
    assert_refused_before_data(proc, expected)


def profile_rows(path):
    return [(int(i), float(v)) for i, v in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.slow
def test_admin_profiling_run_writes_its_profile_beside_the_checkpoints(trained):
    """profile.ratio.init in --save-dir, Transformer-Clinic's format: the encoder's 2N
    lines, then the decoder's 3M (3 + 2 layers here), the values fairseq-train logged."""
    save_dir, first, resumed = trained["transformer_admin_tiny"]
    rows = profile_rows(save_dir / "profile.ratio.init")
    assert [i for i, _ in rows] == [1, 2, 3, 4, 5, 6] + [1, 2, 3, 4, 5, 6]
    logged = []
    for stack in ("encoder", "decoder"):
        line = re.search(rf"omega of the {stack} sublayers profiled on the first training batch: (.*)",
                         first.stderr + first.stdout).group(1)
        logged += [float(v) for v in line.split()]
    assert [v for _, v in rows] == pytest.approx(logged, abs=5e-5)
    written = "Admin: profile written to " + str(save_dir / "profile.ratio.init")
    assert (first.stdout + first.stderr).count(written) == 1
    assert "profile written" not in resumed.stdout + resumed.stderr  # resuming never profiles


@pytest.mark.slow
def test_admin_runs_start_from_the_profile_file(trained, data_bin, tmp_path):
    """The two-stage workflow: runs started from the profile with --admin-profile never
    profile; on the profiling run's seed the run is that run, update for update; on
    another seed omega starts from the file; a file of another depth is refused; the
    checkpoint generates once the file is gone."""
    arch = "transformer_admin_tiny"
    save_dir, first, _ = trained[arch]
    profile = tmp_path / "profile.ratio.init"
    shutil.copy(save_dir / "profile.ratio.init", profile)
    same = train(data_bin, arch, tmp_path / "same", 6, *ARCHS[arch], "--admin-profile", profile)
    log = same.stdout + same.stderr
    assert ADMIN_LOG not in log and f"omega of the encoder sublayers read from {profile}" in log
    assert not (tmp_path / "same" / "profile.ratio.init").exists()
    assert [r["loss"] for r in json_logs(same)] == [r["loss"] for r in json_logs(first)][:6]
    ours, theirs = (torch.load(d / "checkpoint1.pt")["model"] for d in (tmp_path / "same", save_dir))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

    other = train(data_bin, arch, tmp_path / "other", 1, *ARCHS[arch], "--admin-profile", profile,
                  "--seed", "4")
    assert ADMIN_LOG not in other.stdout + other.stderr
    state = torch.load(tmp_path / "other" / "checkpoint_last.pt")["model"]
    assert float(state["admin_profiled"]) == 1.0
    names = [f"encoder.layers.{l}.{n}_layer_norm" for l in range(3) for n in ("self_attn", "final")]
    names += [f"decoder.layers.{l}.{n}_layer_norm" for l in range(2)
              for n in ("self_attn", "encoder_attn", "final")]
    omegas = admin_omegas(state)
    for name, (_, value) in zip(names, profile_rows(profile)):
        assert torch.equal(state[f"{name}.omega_init"], torch.full((64,), value)), name
        assert (omegas[name] - value).abs().max() <= 2e-3 * 1.001, name  # one Adam step of lr 2e-3
    assert not torch.equal(state["encoder.embed_tokens.weight"], theirs["encoder.embed_tokens.weight"])

    deeper = run([*train_command(data_bin, arch, tmp_path / "deeper", 1), "--encoder-layers", "4",
                  "--admin-profile", profile], check=False)
    assert_refused_before_data(deeper, (
        f"--admin-profile {profile} has 12 lines (encoder 1..6, then decoder 1..6: a profile of "
        "3 encoder layers and 2 decoder layers), but this model (4 encoder and 2 decoder layers) "
        "needs 8 + 6 = 14 lines"))

    profile.unlink()  # generation builds from the text the checkpoint's arguments keep
    proc = run(["fairseq-generate", data_bin, "--user-dir", USER_DIR, "--path",
                tmp_path / "other" / "checkpoint_last.pt", "--beam", "2", "--required-batch-size-multiple", "1"])
    assert "Translated 20 sentences" in proc.stdout + proc.stderr


@pytest.mark.parametrize("arch", quick_first(["transformer_prenorm_nowarmup_tiny", "transformer_espa_tiny"],
                                             "transformer_prenorm_nowarmup_tiny"))
def test_hub_loading(trained, data_bin, arch):
    from fairseq_rskip.models import RSkipTransformerModel

    save_dir = trained[arch][0]
    hub = RSkipTransformerModel.from_pretrained(
        str(save_dir), checkpoint_file="checkpoint_last.pt", data_name_or_path=str(data_bin),
        source_lang="src", target_lang="tgt",
    )
    hypothesis = hub.translate("the cat sees a dog", beam=2)
    assert isinstance(hypothesis, str) and hypothesis.split()
    assert all(w in hub.tgt_dict.indices for w in hypothesis.split())


NECESSITY_CHECK = """
import sys, torch
from fairseq_rskip.checkpoint_compat import FAIRSEQ_CHECKPOINT_GLOBALS as ALLOWED
torch.serialization.clear_safe_globals()  # the import allowed them; start from none

def loads_all(allowed):
    with torch.serialization.safe_globals(list(allowed)):
        try:
            for path in sys.argv[1:]:
                torch.load(path)
        except Exception:
            return False
    return True

print("all", loads_all(ALLOWED))
for g in ALLOWED:
    print(g.__module__ + "." + g.__qualname__, loads_all([a for a in ALLOWED if a is not g]))
"""


@pytest.mark.slow
def test_checkpoints_need_exactly_the_allow_list(trained):
    """Every checkpoint loads with the allow-list, and drops any entry and one fails:
    the list is what fairseq writes (--eval-bleu adds numpy arrays), no more."""
    paths = [str(p) for save_dir, _, _ in (trained[a] for a in ARCHS) for p in save_dir.glob("*.pt")]
    proc = subprocess.run(
        [sys.executable, "-c", NECESSITY_CHECK, *paths], capture_output=True, text=True, check=True
    )
    results = dict(line.rsplit(" ", 1) for line in proc.stdout.splitlines())
    assert results.pop("all") == "True"
    assert len(results) >= 5 and set(results.values()) == {"False"}, results


@pytest.mark.slow
def test_checkpoint_loads_only_with_the_plugin(trained):
    path = trained["transformer_rskip_tiny"][0] / "checkpoint_best.pt"
    code = "import sys, torch\n{}\ntorch.load(sys.argv[1])\nprint('loaded')"
    without = subprocess.run([sys.executable, "-c", code.format(""), str(path)], capture_output=True, text=True)
    assert without.returncode != 0 and "argparse.Namespace" in without.stderr
    with_plugin = subprocess.run(
        [sys.executable, "-c", code.format("import fairseq_rskip"), str(path)], capture_output=True, text=True
    )
    assert with_plugin.returncode == 0, with_plugin.stderr
    # anything else stays refused
    evil = subprocess.run(
        [sys.executable, "-c",
         "import io, fractions, torch, fairseq_rskip\n"
         "buf = io.BytesIO(); torch.save({'x': fractions.Fraction(1, 3)}, buf); buf.seek(0)\n"
         "torch.load(buf)"],
        capture_output=True, text=True,
    )
    assert evil.returncode != 0 and "fractions.Fraction" in evil.stderr


@pytest.mark.slow
def test_bad_flag_is_refused_by_fairseq_train(data_bin, tmp_path):
    proc = run([
        "fairseq-train", data_bin, "--user-dir", USER_DIR, "--arch", "transformer_rskip_tiny",
        "--skip-recursions", "0", "--optimizer", "adam", "--lr", "1e-3", "--max-update", "1",
        "--max-tokens", "800",
        "--save-dir", tmp_path,
    ], check=False)
    assert proc.returncode != 0
    assert "--skip-recursions must be an integer >= 1; got 0" in proc.stderr


@pytest.mark.slow
def test_saved_arguments_carry_the_defaults_version(trained, data_bin):
    """fairseq-train saves the version of the architectures' defaults, so the
    checkpoint loads as the reading it was trained with (tests/test_old_checkpoints.py:
    checkpoints without it)."""
    from fairseq import checkpoint_utils

    path = trained["transformer_adanorm_tiny"][0] / "checkpoint_last.pt"
    assert torch.load(path)["cfg"]["model"].skip_norm_defaults_version == DEFAULTS_VERSION
    [model], _ = checkpoint_utils.load_model_ensemble([str(path)], arg_overrides={"data": str(data_bin)})
    assert model.encoder.layer_norm.norm_type == model.decoder.layer_norm.norm_type == "adanorm"
    assert model.encoder.layer_norm.adanorm_scale == 1.0
    assert model.decoder.layers[0].final_layer_norm.norm_type == "layernorm"


@pytest.mark.slow
def test_source_use_command_agrees_with_fairseq_validate(trained, data_bin, tmp_path):
    """rskip-source-use: its cross-entropy over the whole split is fairseq-validate's
    (the trained criterion's nll_loss, bits per token); the table names both models and the buckets."""
    ckpts = {arch: trained[arch][0] / "checkpoint_last.pt"
             for arch in ("transformer_rskip_tiny", "transformer_espa_tiny")}
    out = tmp_path / "use.csv"
    proc = run(["rskip-source-use", "--data", data_bin, "--csv", out,
                *[a for arch, path in ckpts.items() for a in ("--checkpoint", f"{arch}={path}")]])
    rows = {(r["model"], r["target_tokens"]): r for r in csv.DictReader(out.read_text(encoding="utf-8").splitlines())}
    assert rows[("transformer_espa_tiny", "all")]["sentences"] == "40"
    assert "| 1-9 | 10-19 | 20-29 | 30-39 | 40-59 | 60+ |" in proc.stdout
    for arch, path in ckpts.items():
        validate = run(["fairseq-validate", data_bin, "--user-dir", USER_DIR, "--path", path,
                        "--task", "translation", "--max-tokens", "4096", "--valid-subset", "valid",
                        # fairseq drops a last batch smaller than this multiple (facebookresearch/fairseq#5036)
                        "--required-batch-size-multiple", "1"])
        found = re.search(r"\| valid on 'valid' subset \| loss [0-9.]+ \| nll_loss ([0-9.]+)",
                          validate.stdout + validate.stderr)
        assert float(rows[(arch, "all")]["bits"]) == pytest.approx(float(found[1]), abs=2e-3)
        assert f"| {arch} | 40 |" in proc.stdout

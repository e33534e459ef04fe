"""The package's layers import only downward, and the core's extension points are
tables. The core (the config, modules/, models/, optim/): the config imports nothing
of the plugin, modules/ the config and not models/, none of them a tool. The tools:
one package a job under tools/ (plus scoring/), over the base tools/common/ and
data_prep/, which import no tool; no tool imports another. The skip weights and the
norms that take the fused recompute are listed where they are defined."""

import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch

import fairseq_rskip
from fairseq_rskip.config import NORM_TYPES, Interval, SkipNormConfig, choices_of
from fairseq_rskip.modules import ResidualNorm
from fairseq_rskip.modules.norm_functions import RecomputedNormsFunction, RecursiveLayerNormFunction
from fairseq_rskip.modules.normalization import NORMS, Normalization
from fairseq_rskip.modules.residual_norm import RESIDUAL_NORMS
from fairseq_rskip.modules.skip_weights import SKIP_WEIGHTS, SkipWeight, skip_weight_of

PACKAGE = Path(fairseq_rskip.__file__).resolve().parent
CORE = ("config", "modules", "models", "optim")
BASE = ("tools.common", "data_prep")


def tool_rooms() -> list:
    """Every tool's package: each folder under tools/ but the base, and scoring/."""
    rooms = [f"tools.{p.name}" for p in (PACKAGE / "tools").iterdir()
             if (p / "__init__.py").is_file() and f"tools.{p.name}" not in BASE]
    return sorted(rooms + ["scoring"])


TOOLS = tuple(tool_rooms())


def room_of(module: str):
    """The base or tool package a ``fairseq_rskip.*`` module name is in (None: core or top level)."""
    rest = module.split(".", 1)[1] if "." in module else ""
    for room in BASE + TOOLS:
        if rest == room or rest.startswith(room + "."):
            return room
    return None


def plugin_imports(path: Path) -> set:
    """The ``fairseq_rskip`` modules a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "fairseq_rskip")
    return found


def imports_under(folder: str) -> dict:
    """``{file: its plugin imports}`` of every module under ``folder``, at any depth."""
    return {p.relative_to(PACKAGE).as_posix(): plugin_imports(p) for p in (PACKAGE / folder).rglob("*.py")}


def test_the_config_imports_nothing_of_the_plugin_but_itself():
    imports = imports_under("config")
    assert set(imports) == {"config/__init__.py", "config/fields.py", "config/rules.py",
                            "config/skip_norm.py"}
    for path, names in imports.items():
        outside = sorted(n for n in names if not n.startswith("fairseq_rskip.config"))
        assert outside == [], (path, outside)


def test_every_norm_type_choice_has_one_class_and_one_residual_class():
    """A norm is one class in NORMS: the flag's choices, the registry and the
    ResidualNorm classes list the same names."""
    assert tuple(NORMS) == NORM_TYPES
    assert choices_of(SkipNormConfig.__dataclass_fields__["norm_type"]) == list(NORM_TYPES)
    for name, cls in NORMS.items():
        assert issubclass(cls, Normalization) and cls.norm_type == name
        joined = RESIDUAL_NORMS[name]
        assert joined.__mro__[1:3] == (ResidualNorm, cls)
        assert type(ResidualNorm(8, SkipNormConfig(norm_type=name), normalize_before=True)) is joined


def test_modules_import_neither_the_models_nor_a_tool():
    imports = imports_under("modules")
    assert len(imports) >= 10
    for path, names in imports.items():
        above = sorted(n for n in names if n.startswith("fairseq_rskip.models"))
        assert above == [], (path, above)
        tools = sorted(n for n in names if room_of(n))
        assert tools == [], (path, tools)


@pytest.mark.parametrize("folder", ["models", "optim"])
def test_the_core_imports_no_tool(folder):
    imports = imports_under(folder)
    assert imports
    for path, names in imports.items():
        tools = sorted(n for n in names if room_of(n))
        assert tools == [], (path, tools)


def test_the_tools_are_the_rooms_expected():
    assert TOOLS == ("scoring", "tools.average_checkpoints", "tools.benchmark", "tools.gpu_check",
                     "tools.gradients", "tools.output_change", "tools.runner",
                     "tools.signal_propagation", "tools.source_use", "tools.warmup")


def upward_imports(room: str) -> dict:
    """``{file: [imports of a tool other than room]}`` of the files in ``room``."""
    found = {}
    for path, names in imports_under(room.replace(".", "/")).items():
        wrong = sorted(n for n in names if room_of(n) in TOOLS and room_of(n) != room)
        if wrong:
            found[path] = wrong
    return found


@pytest.mark.parametrize("room", BASE)
def test_the_base_imports_no_tool(room):
    assert upward_imports(room) == {}


@pytest.mark.parametrize("room", TOOLS)
def test_no_tool_imports_another(room):
    assert upward_imports(room) == {}


def test_the_layout_check_sees_a_sibling_and_an_upward_import(tmp_path, monkeypatch):
    """A file that imports a sibling tool, or the base a tool, is caught."""
    sibling = PACKAGE / "tools" / "warmup" / "_layout_probe.py"
    upward = PACKAGE / "tools" / "common" / "_layout_probe.py"
    try:
        sibling.write_text("from fairseq_rskip.tools.runner import report\n")
        upward.write_text("import fairseq_rskip.tools.gradients.gradients\n")
        assert upward_imports("tools.warmup") == {
            "tools/warmup/_layout_probe.py": ["fairseq_rskip.tools.runner", "fairseq_rskip.tools.runner.report"]}
        assert upward_imports("tools.common") == {
            "tools/common/_layout_probe.py": ["fairseq_rskip.tools.gradients.gradients"]}
    finally:
        sibling.unlink(missing_ok=True)
        upward.unlink(missing_ok=True)


def test_each_command_lives_in_its_tools_cli_module():
    """One home per command: every console script is the ``cli`` module of its package."""
    import importlib.metadata

    scripts = [ep for ep in importlib.metadata.distribution("fairseq_rskip").entry_points
               if ep.group == "console_scripts"]
    assert len(scripts) >= 10
    for ep in scripts:
        module = ep.value.split(":")[0]
        assert module.endswith(".cli") and (room_of(module) in TOOLS + BASE), ep
    assert not (PACKAGE / "cli").exists() and not (PACKAGE / "analysis").exists()
    assert not list((PACKAGE.parent / "scripts").glob("*.py"))


def test_every_skip_weight_choice_has_one_strategy():
    choices = choices_of(SkipNormConfig.__dataclass_fields__["skip_weight"])
    assert sorted(SKIP_WEIGHTS) == sorted(choices)
    assert all(isinstance(strategy, SkipWeight) for strategy in SKIP_WEIGHTS.values())


@pytest.mark.parametrize("name", sorted(SKIP_WEIGHTS))
def test_a_trainable_skip_weight_is_a_vector_omega_and_a_fixed_one_a_number(name):
    """A trainable one (Admin's) is ``omega_init`` (a buffer, its start) plus the
    parameter ``omega_delta`` (0 at build)."""
    config = SkipNormConfig(skip_weight=name)
    strategy = skip_weight_of(config)
    weight = strategy.initial_weight(config, "encoder", 6, 6, sublayers_per_layer=2)
    norm = ResidualNorm(8, config, normalize_before=False, skip_weight=weight)
    assert (norm.omega_delta is not None) == strategy.trainable == (norm.skip_vector() is not None)
    assert norm.omega is None  # NormFormer's --scale-resids only
    assert norm.skip_weight == weight
    if strategy.trainable:
        assert torch.equal(norm.skip_vector().detach(), torch.full((8,), weight))
        assert "omega_init" in dict(norm.named_buffers()) and "omega_init" not in dict(norm.named_parameters())
        assert torch.equal(norm.omega_delta.detach(), torch.zeros(8))


def fused_or_recomputed(norm_type: str):
    norm = ResidualNorm(8, SkipNormConfig(norm_type=norm_type, skip_recursions=2), normalize_before=False)
    x = torch.randn(3, 8, requires_grad=True)
    return type(norm(x * 2, x).grad_fn).__name__


@pytest.mark.parametrize("norm_type", ["layernorm", "simple", "adanorm", "rmsnorm", "dyt"])
def test_the_listed_norms_take_the_fused_recompute_and_the_others_the_generic_one(norm_type):
    """rSkip's recursions over F.layer_norm run as one fused function; any other
    norm through the generic recompute of its own forward."""
    expected = RecursiveLayerNormFunction if NORMS[norm_type].layer_norm_based else RecomputedNormsFunction
    assert fused_or_recomputed(norm_type) == f"{expected.__name__}Backward"
    assert {name for name, cls in NORMS.items() if cls.layer_norm_based} == {"layernorm", "simple"}


def fields_with(key):
    return [f for f in dataclasses.fields(SkipNormConfig) if key(f)]


@pytest.mark.parametrize("f", fields_with(choices_of), ids=lambda f: f.name)
def test_every_choice_field_refuses_a_value_outside_its_choices(f):
    config = SkipNormConfig(**{f.name: "bogus"})
    flag = "--" + f.name.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} must be one of {', '.join(choices_of(f))}; got 'bogus'$"):
        config.check_values()


RANGE_FIELDS = fields_with(lambda f: "range" in f.metadata)


def test_the_numeric_flags_have_ranges():
    assert {f.name for f in RANGE_FIELDS} == {
        "skip_recursions", "skip_scale", "adanorm_scale", "adanorm_k", "spa_gamma_final",
        "spa_rho_final", "tat_eta", "cross_attention_gain_init", "rmsnorm_partial",
        "dyt_alpha_init", "dyt_attention_alpha_init", "residual_gain_init",
    }


@pytest.mark.parametrize("f", RANGE_FIELDS, ids=lambda f: f.name)
def test_every_range_field_refuses_its_open_ends_and_non_finite_values(f):
    allowed = f.metadata["range"]
    outside = [math.nan, math.inf, allowed.low - 1]
    if not allowed.closed_low:
        outside.append(allowed.low)
    if allowed.high < math.inf and not allowed.closed_high:
        outside.append(allowed.high)
    for value in outside:
        with pytest.raises(ValueError, match=re.escape(f"must be {allowed.describe()}; got {value!r}")):
            SkipNormConfig(**{f.name: value}).check_values()
    inside = allowed.low if allowed.closed_low else allowed.low + 0.5
    SkipNormConfig(**{f.name: int(inside) if allowed.integer else inside}).check_values()


def test_interval_descriptions():
    assert Interval(1, closed_low=True, integer=True).describe() == "an integer >= 1"
    assert Interval(0).describe() == "a finite number > 0"
    assert Interval(0, 1, closed_low=True).describe() == "a number in [0, 1)"
    assert Interval(0, 1).describe() == "a number in (0, 1)"
    assert 2.0 not in Interval(1, closed_low=True, integer=True)
    assert True not in Interval(0)


def test_no_library_file_is_over_400_lines():
    long = {p.relative_to(PACKAGE).as_posix(): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}


# the forward passes that keep the steps and interface of fairseq 0.12.3.1's (their docstrings
# say which)
MIRRORS_OF_FAIRSEQ = {"modules/shaped_attention.py:forward", "modules/transformer_layer.py:forward"}


def test_no_function_is_over_80_lines_but_the_forward_passes_that_mirror_fairseqs():
    long = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.add(f"{path.relative_to(PACKAGE).as_posix()}:{node.name}")
    assert long == MIRRORS_OF_FAIRSEQ

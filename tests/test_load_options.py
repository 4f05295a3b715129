"""LoadOptions: the from_pretrained options declared once, and every entry point going through them;
and the meta-device build, scoped to the builds that are running."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from backbones import AutoBackbone, AutoBackboneConfig, BackboneError, LoadOptions, hookimpl, load_backbone
from backbones._loading import parameters_on_meta
from backbones.testing import modules_loaded_by
from backbones_toynet.model import ToyNetBackbone, ToyNetConfig

pytestmark = pytest.mark.usefixtures("registry")

VALID = (
    "the load options are: allow_pickle, cache_dir, checkpoint_prefix, config_key, device, dtype, force_download, "
    "local_files_only, max_parameters, out_features, out_indices, output_loading_info, revision, strict, token, "
    "use_timm_backbone"
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    ToyNetBackbone(ToyNetConfig(widths=[4, 8, 8], out_indices=[1, 2, 3])).save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


# -- the object ---------------------------------------------------------------------------------------------


# Every load option's default, in the order LoadOptions declares them.
DEFAULTS: dict[str, Any] = {
    "out_indices": None,
    "out_features": None,
    "revision": None,
    "cache_dir": None,
    "local_files_only": False,
    "token": None,
    "force_download": False,
    "dtype": None,
    "device": None,
    "strict": False,
    "allow_pickle": False,
    "checkpoint_prefix": "",
    "config_key": None,
    "output_loading_info": False,
    "use_timm_backbone": False,
    "max_parameters": None,
}
# The options added after plugin API 1.0, which a 1.0 plugin's dict of options does not hold.
NEWER_THAN_API_1_0 = ("use_timm_backbone", "max_parameters")


def test_fields_and_defaults() -> None:
    defaults = {item.name: item.default for item in dataclasses.fields(LoadOptions)}
    assert defaults == DEFAULTS
    assert LoadOptions() == LoadOptions(**defaults)


def test_every_field_has_a_docstring() -> None:
    source = inspect.getsource(LoadOptions)
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    documented = {
        statement.target.id
        for statement, following in zip(body.body, body.body[1:])
        if isinstance(statement, ast.AnnAssign)
        and isinstance(statement.target, ast.Name)
        and isinstance(following, ast.Expr)
        and isinstance(following.value, ast.Constant)
        and isinstance(following.value.value, str)
    }
    assert documented == {item.name for item in dataclasses.fields(LoadOptions)}


def test_frozen_hashable_and_lists_become_tuples() -> None:
    options = LoadOptions(out_indices=[1, 2], out_features=["stage1"], dtype="bfloat16")
    assert options.out_indices == (1, 2) and options.out_features == ("stage1",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.dtype = "float16"  # type: ignore[misc]
    assert hash(options) == hash(LoadOptions(out_indices=(1, 2), out_features=("stage1",), dtype="bfloat16"))
    assert options.replace(dtype="float16").dtype == "float16" and options.dtype == "bfloat16"
    assert options.selection() == {"out_indices": [1, 2], "out_features": ["stage1"]}
    assert "hf_secret" not in repr(LoadOptions(token="hf_secret"))
    with pytest.raises(TypeError, match=r"LoadOptions\.__init__\(\) takes 1 positional argument"):
        LoadOptions([1, 2])  # type: ignore[misc]


def test_unknown_option_names_the_valid_ones() -> None:
    with pytest.raises(TypeError) as error:
        LoadOptions(revison="v1")  # type: ignore[call-arg]
    assert str(error.value) == f"unknown load option 'revison' (did you mean 'revision'?); {VALID}"
    with pytest.raises(TypeError, match=r"unknown load options 'colour', 'stict' \(did you mean 'strict'\?\)"):
        LoadOptions(stict=True, colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown load option 'revison'"):
        LoadOptions().replace(revison="v1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strict": 1}, "strict must be True or False, got 1"),
        ({"checkpoint_prefix": None}, "checkpoint_prefix must be a string (e.g. 'model.encoder.'), got None"),
        ({"revision": 3}, "revision must be a string or None, got 3"),
        ({"token": 3}, "token must be a string, a bool or None, got int"),
    ],
)
def test_wrong_value_types_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError) as error:
        LoadOptions(**kwargs)
    assert str(error.value) == message


def test_split_separates_options_from_config_overrides() -> None:
    base = LoadOptions(dtype="bfloat16", revision="v1")
    options, overrides = LoadOptions.split({"revision": "v2", "out_indices": [1], "widths": [4, 8]}, base=base)
    assert options == LoadOptions(dtype="bfloat16", revision="v2", out_indices=(1,))
    assert overrides == {"widths": [4, 8]}
    assert LoadOptions.split({}, base=base) == (base, {})
    with pytest.raises(TypeError, match="load_options must be a backbones.LoadOptions, got dict"):
        LoadOptions.split({}, base={"dtype": "bfloat16"})  # type: ignore[arg-type]


def test_exported_lazily_without_torch() -> None:
    code = (
        "import backbones\n"
        "assert 'LoadOptions' in backbones.__all__ and 'LoadOptions' in dir(backbones)\n"
        "backbones.LoadOptions(dtype='bfloat16')\n"
    )
    assert "torch" not in modules_loaded_by(code)


def test_from_pretrained_overloads_spell_out_every_option() -> None:
    """The typed overloads of AutoBackbone.from_pretrained list exactly the fields of LoadOptions."""
    import backbones._auto

    tree = ast.parse(inspect.getsource(backbones._auto.AutoBackbone))
    overloads = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and node.name == "from_pretrained"
        and any(isinstance(d, ast.Name) and d.id == "overload" for d in node.decorator_list)
    ]
    assert len(overloads) == 2
    fields = [item.name for item in dataclasses.fields(LoadOptions)]
    for node in overloads:
        assert [arg.arg for arg in node.args.kwonlyargs] == ["load_options", *fields]


# -- every entry point goes through it ----------------------------------------------------------------------


def test_auto_backbone_from_pretrained(checkpoint: Path) -> None:
    with pytest.raises(TypeError) as error:
        AutoBackbone.from_pretrained(checkpoint, revison="v1")
    assert str(error.value) == (
        f"unknown load option 'revison' (did you mean 'revision'?); {VALID}; "
        "any other keyword is a config override (a field of the backbone's config)"
    )
    with pytest.raises(TypeError, match=r"unknown load option 'torch_dtype' \(did you mean 'dtype'\?\)"):
        AutoBackbone.from_pretrained(checkpoint, torch_dtype=torch.float16)
    model = AutoBackbone.from_pretrained(checkpoint, load_options=LoadOptions(dtype="bfloat16"), out_indices=[1])
    assert model.out_indices == [1] and model.stem.weight.dtype == torch.bfloat16
    # Other keywords are config overrides: fields, and extras kept as attributes (as transformers does).
    model = AutoBackbone.from_pretrained(checkpoint, widths=[4, 8, 8], my_note="kept")
    assert model.config.widths == [4, 8, 8] and model.config.my_note == "kept"


def test_a_config_key_that_looks_like_an_option_is_an_override(checkpoint: Path) -> None:
    # "devices" is one letter from "device", but config.json holds it: it is the config's.
    config = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(config.replace('"model_type"', '"devices": 1, "model_type"'))
    assert AutoBackbone.from_pretrained(checkpoint, devices=2).config.devices == 2
    with pytest.raises(TypeError, match=r"unknown load option 'devise' \(did you mean 'device'\?\)"):
        AutoBackbone.from_pretrained(checkpoint, devise="cpu")


def test_backbone_from_pretrained(checkpoint: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown load option 'local_file_only' \(did you mean 'local_files_only'\?\)"):
        ToyNetBackbone.from_pretrained(checkpoint, local_file_only=True)
    model, report = ToyNetBackbone.from_pretrained(
        checkpoint, load_options=LoadOptions(output_loading_info=True, out_features=["stage2"])
    )
    assert report.clean and model.out_features == ["stage2"]


def test_auto_backbone_config_from_pretrained(checkpoint: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown load option 'out_index' \(did you mean 'out_indices'\?\)"):
        AutoBackboneConfig.from_pretrained(checkpoint, out_index=[1])
    assert AutoBackboneConfig.from_pretrained(checkpoint, out_indices=[2]).out_indices == [2]


def test_load_backbone(checkpoint: Path) -> None:
    for pretrained in (True, False):
        head = {"backbone": str(checkpoint), "use_pretrained_backbone": pretrained, "backbone_kwargs": {"dtpye": "x"}}
        with pytest.raises(TypeError, match=r"unknown load option 'dtpye' \(did you mean 'dtype'\?\)"):
            load_backbone(head)
    head = {"backbone": str(checkpoint), "use_pretrained_backbone": True, "backbone_kwargs": {"dtype": "float64"}}
    assert load_backbone(head).stem.weight.dtype == torch.float64
    head["backbone_kwargs"] = {"output_loading_info": True}
    with pytest.raises(BackboneError, match="backbone_kwargs cannot set output_loading_info"):
        load_backbone(head)


def test_cli_builds_load_options(checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import backbones._loading
    from backbones._cli import main

    received: list[tuple[Any, ...]] = []

    def load_pretrained(name: Any, options: Any, overrides: Any, **kwargs: Any) -> Any:
        received.append((name, options, overrides))
        raise BackboneError("stopped by the test")

    monkeypatch.setattr(backbones._loading, "load_pretrained", load_pretrained)
    argv = ["extract", "image.png", "--model", str(checkpoint), "--out-indices", "1", "2"]
    assert main([*argv, "--revision", "v1", "--local-files-only"]) == 2
    assert "stopped by the test" in capsys.readouterr().err
    assert received == [(str(checkpoint), LoadOptions(revision="v1", local_files_only=True, out_indices=(1, 2)), {})]


# -- the load_backbone_from_name hook -----------------------------------------------------------------------


class _NameLoader:
    """A plugin of plugin API 1.1 that loads the names ``zoo:...``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    @hookimpl
    def load_backbone_from_name(self, name: str, load_options: LoadOptions, config_overrides: Any) -> Any:
        if not name.startswith("zoo:"):
            return None
        self.calls.append((name, load_options, config_overrides))
        config = ToyNetConfig(widths=[4, 8], **load_options.selection(), **config_overrides)
        return ToyNetBackbone(config)


class _OldNameLoader:
    """A plugin of plugin API 1.0: ``options`` is one dict."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @hookimpl
    def load_backbone_from_name(self, name: str, options: dict[str, Any]) -> Any:
        if not name.startswith("old:"):
            return None
        self.calls.append(options)
        return ToyNetBackbone(ToyNetConfig(widths=[4, 8], out_indices=options["out_indices"]))


def test_hook_gets_the_options_object_and_the_overrides_apart(registry: Any) -> None:
    registry.discover()
    new, old = _NameLoader(), _OldNameLoader()
    registry.plugin_manager.register(new)
    registry.plugin_manager.register(old)
    try:
        model = AutoBackbone.from_pretrained("zoo:tiny", out_indices=[1], strict=True, hidden_act="relu")
        assert model.out_indices == [1]
        ((name, options, overrides),) = new.calls
        assert name == "zoo:tiny" and options == LoadOptions(out_indices=(1,), strict=True)
        assert dict(overrides) == {"hidden_act": "relu"}
        with pytest.raises(TypeError):
            overrides["strict"] = False  # read-only
        with pytest.raises(TypeError, match=r"unknown load option 'stict' \(did you mean 'strict'\?\)"):
            AutoBackbone.from_pretrained("zoo:tiny", stict=True)
        assert len(new.calls) == 1, "a misspelt option is refused before any plugin is asked"

        assert AutoBackbone.from_pretrained("old:tiny", out_indices=[1], dtype="float64").out_indices == [1]
        (legacy,) = old.calls
        api_1_0_defaults = {name: value for name, value in DEFAULTS.items() if name not in NEWER_THAN_API_1_0}
        assert legacy == {**api_1_0_defaults, "out_indices": [1], "dtype": "float64"}
    finally:
        registry.plugin_manager.unregister(new)
        registry.plugin_manager.unregister(old)


def test_timm_hook_gets_no_load_option_as_a_timm_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("backbones_timm")
    import backbones_timm._pretrained

    received: list[tuple[str, Any, Any]] = []

    def load(name: str, options: Any, overrides: Any) -> Any:
        received.append((name, options, dict(overrides)))
        return "loaded"

    monkeypatch.setattr(backbones_timm._pretrained, "_load", load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # "resnet10t" could be a hub id: never ask the network
    loaded = AutoBackbone.from_pretrained(
        "resnet10t", strict=True, allow_pickle=True, dtype="float64", drop_path_rate=0.1
    )
    assert loaded == "loaded"
    assert received == [
        ("resnet10t", LoadOptions(strict=True, allow_pickle=True, dtype="float64"), {"drop_path_rate": 0.1})
    ]
    with pytest.raises(TypeError, match=r"unknown load option 'revison' \(did you mean 'revision'\?\)"):
        AutoBackbone.from_pretrained("resnet10t", revison="v1")
    with pytest.raises(TypeError, match=r"unknown load option 'local_file_only'"):
        backbones_timm.load_timm_pretrained("resnet10t", local_file_only=True)
    assert len(received) == 1


# -- the meta-device build ----------------------------------------------------------------------------------

TORCH_REGISTER_PARAMETER = nn.Module.__dict__["register_parameter"]


def test_register_parameter_is_torchs_own_after_a_load(checkpoint: Path) -> None:
    assert TORCH_REGISTER_PARAMETER.__module__ == "torch.nn.modules.module"
    model = AutoBackbone.from_pretrained(checkpoint)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert nn.Module.__dict__["register_parameter"] is TORCH_REGISTER_PARAMETER
    with pytest.raises(BackboneError):  # a failed load restores it too
        AutoBackbone.from_pretrained(checkpoint, widths=[4, 8, 16])
    assert nn.Module.__dict__["register_parameter"] is TORCH_REGISTER_PARAMETER


class _WithTable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))
        self.register_buffer("table", torch.arange(6).reshape(2, 3), persistent=False)


def test_buffers_stay_real_and_builds_nest() -> None:
    with parameters_on_meta():
        with parameters_on_meta():
            inner = _WithTable()
        assert nn.Module.__dict__["register_parameter"] is not TORCH_REGISTER_PARAMETER, "the outer build still runs"
        outer = _WithTable()
    assert nn.Module.__dict__["register_parameter"] is TORCH_REGISTER_PARAMETER
    for module in (inner, outer):
        assert module.weight.is_meta
        assert torch.equal(module.table, torch.arange(6).reshape(2, 3))
    assert not _WithTable().weight.is_meta


def test_a_parameter_made_in_another_thread_during_a_build_is_real() -> None:
    """Two overlapping builds in two threads, and a third thread creating parameters meanwhile."""
    steps = {name: threading.Event() for name in ("a_in", "b_in", "a_out", "outside_done", "b_may_leave")}
    seen: dict[str, Any] = {}

    def build_a() -> None:
        with parameters_on_meta():
            seen["a"] = _WithTable().weight.device.type
            steps["a_in"].set()
            steps["b_in"].wait(10)
        steps["a_out"].set()

    def build_b() -> None:
        steps["a_in"].wait(10)
        with parameters_on_meta():
            steps["b_in"].set()
            steps["a_out"].wait(10)
            seen["b after a left"] = _WithTable().weight.device.type
            steps["b_may_leave"].wait(10)

    def outside() -> None:
        steps["b_in"].wait(10)
        seen["outside"] = (_WithTable().weight.device.type, nn.Linear(2, 2).weight.device.type)
        steps["outside_done"].set()

    threads = [threading.Thread(target=target) for target in (build_a, build_b, outside)]
    for thread in threads:
        thread.start()
    steps["outside_done"].wait(10)
    steps["a_out"].wait(10)
    seen["patched while b builds"] = nn.Module.__dict__["register_parameter"] is not TORCH_REGISTER_PARAMETER
    steps["b_may_leave"].set()
    for thread in threads:
        thread.join(10)
    assert seen == {
        "a": "meta",
        "outside": ("cpu", "cpu"),
        "b after a left": "meta",
        "patched while b builds": True,
    }
    assert nn.Module.__dict__["register_parameter"] is TORCH_REGISTER_PARAMETER


def test_a_wrapper_installed_during_a_build_is_left_in_place() -> None:
    calls: list[str] = []
    with parameters_on_meta():
        ours = nn.Module.register_parameter

        def wrapper(self: nn.Module, name: str, param: Any) -> None:
            calls.append(name)
            ours(self, name, param)

        nn.Module.register_parameter = wrapper  # type: ignore[method-assign]
    try:
        assert nn.Module.__dict__["register_parameter"] is wrapper
        assert not _WithTable().weight.is_meta and calls == ["weight"]
        with parameters_on_meta():
            assert _WithTable().weight.is_meta
        assert not _WithTable().weight.is_meta
    finally:
        nn.Module.register_parameter = TORCH_REGISTER_PARAMETER  # type: ignore[method-assign]

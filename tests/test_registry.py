"""Plugin discovery: entry points, failures attributed to distributions, conflicts, switches, threads."""

from __future__ import annotations

import re
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backbones import PluginError, UnknownModelTypeError
from backbones._registry import KNOWN_DISTRIBUTIONS, Registry, get_registry, reset_registry
from backbones.testing import modules_loaded_by

GOOD_HOOK = """
from backbones import hookimpl
CALLS = []

@hookimpl
def register_backbones(register):
    CALLS.append(1)
    register("{model_type}", config="backbones_toynet.model:ToyNetConfig",
             model="backbones_toynet.model:ToyNetBackbone", description="fake")
"""


class FakeSite:
    """A directory on sys.path holding installed (dist-info) distributions made up by a test."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def install(
        self,
        dist: str,
        module: str,
        source: str,
        entry_name: str | None = None,
        version: str = "0.1",
        api: str | None = "1.0",
    ) -> None:
        declaration = f"BACKBONES_PLUGIN_API = {api!r}\n" if api is not None else ""
        (self.root / f"{module}.py").write_text(declaration + textwrap.dedent(source))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[backbones]\n{entry_name or module} = {module}\n")

    def install_manifest(self, dist: str, package: str, manifest: str, version: str = "0.1") -> None:
        """A manifest plugin: a package whose ``__init__`` fails if anything imports it, and its backbones.toml."""
        folder = self.root / package
        folder.mkdir()
        (folder / "__init__.py").write_text(f"raise RuntimeError('{package} was imported')\n")
        (folder / "backbones.toml").write_text(textwrap.dedent(manifest))
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[backbones]\n{package} = {package}\n")


def _fake_failures(registry: Registry) -> list:
    """Failures of this test's made-up distributions (real plugins installed beside them are not ours)."""
    return [failure for failure in registry.failures if failure.distribution.startswith("backbones-fake")]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSite]:
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "BACKBONES_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    reset_registry()
    yield FakeSite(tmp_path)
    reset_registry()
    for name in [name for name in sys.modules if name.startswith("fake_")]:
        del sys.modules[name]


def test_plugin_is_found_with_its_distribution(site: FakeSite) -> None:
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"), version="2.5")
    entry = get_registry().get("fakegood")
    assert (entry.distribution, entry.version, entry.description) == ("backbones-fakegood", "2.5", "fake")
    assert entry.config == "backbones_toynet.model:ToyNetConfig", "registration stays lazy"
    assert "fakegood" in get_registry().model_types()
    assert _fake_failures(get_registry()) == []


def test_import_failure_is_reported_and_raised_only_for_its_type(site: FakeSite) -> None:
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    site.install("backbones-fakebroken", "fake_broken", "import numpy_that_does_not_exist\n", entry_name="fakebroken")
    registry = get_registry()
    assert registry.get("fakegood").distribution == "backbones-fakegood"
    (failure,) = _fake_failures(registry)
    assert (failure.name, failure.distribution) == ("fakebroken", "backbones-fakebroken")
    assert failure.summary == "ModuleNotFoundError: No module named 'numpy_that_does_not_exist'"
    with pytest.raises(
        PluginError, match=r"comes from plugin backbones-fakebroken, which failed to load: ModuleNotFoundError"
    ) as caught:
        registry.get("fakebroken")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
    with pytest.raises(
        UnknownModelTypeError, match=r"Plugins that failed to load: .*backbones-fakebroken \(ModuleNotFoundError"
    ):
        registry.get("something-else")


def test_failing_hook_registers_nothing(site: FakeSite) -> None:
    site.install(
        "backbones-fakehalf",
        "fake_half",
        """
        from backbones import hookimpl

        @hookimpl
        def register_backbones(register):
            register("half-one", config="a:B", model="a:C")
            raise RuntimeError("second registration exploded")
        """,
    )
    registry = get_registry()
    (failure,) = _fake_failures(registry)
    assert failure.distribution == "backbones-fakehalf"
    assert failure.summary == "RuntimeError: second registration exploded"
    assert "half-one" not in registry.model_types()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            'register("bad", config=42, model="a:B")',
            "config of 'bad' must be a class or a 'module:attr' string, got int",
        ),
        (
            'register("bad", config="no_colon", model="a:B")',
            "config of 'bad' must be a class or a 'module:attr' string, got 'no_colon'",
        ),
        ('register("", config="a:B", model="a:B")', "model_type must be a non-empty string, got ''"),
        (
            'register("bad", config="a:B", model="a:B", aliases="x")',
            "aliases of 'bad' must be a list of non-empty strings",
        ),
    ],
)
def test_bad_registration_is_reported(site: FakeSite, call: str, message: str) -> None:
    site.install(
        "backbones-fakebad",
        "fake_bad",
        f"from backbones import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n    {call}\n",
    )
    (failure,) = _fake_failures(get_registry())
    assert failure.distribution == "backbones-fakebad"
    assert message in failure.summary


def test_misspelled_hook_is_reported(site: FakeSite) -> None:
    site.install(
        "backbones-faketypo",
        "fake_typo",
        "from backbones import hookimpl\n\n@hookimpl\ndef register_backbone(register):\n    pass\n",
    )
    (failure,) = _fake_failures(get_registry())
    assert failure.distribution == "backbones-faketypo"
    assert "implements an unknown hook" in failure.summary and "register_backbone" in failure.summary


def test_module_without_hook_is_reported(site: FakeSite) -> None:
    site.install("backbones-fakeempty", "fake_empty", "VALUE = 1\n")
    (failure,) = _fake_failures(get_registry())
    assert failure.summary == "PluginError: plugin 'fake_empty' implements no register_backbones hook"


def test_two_distributions_claiming_a_type_conflict(site: FakeSite) -> None:
    site.install("backbones-fakea", "fake_a", GOOD_HOOK.format(model_type="shared"))
    site.install("backbones-fakeb", "fake_b", GOOD_HOOK.format(model_type="shared"))
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    registry = get_registry()
    with pytest.raises(
        PluginError,
        match="model type 'shared' is provided by several distributions: backbones-fakea and backbones-fakeb",
    ):
        registry.get("shared")
    assert registry.conflicts == {"shared": ["backbones-fakea", "backbones-fakeb"]}
    assert registry.get("fakegood").distribution == "backbones-fakegood"


def test_environment_switches(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    site.install("backbones-fakeother", "fake_other", GOOD_HOOK.format(model_type="fakeother"))
    monkeypatch.setenv("BACKBONES_DISABLE_PLUGINS", "fake_good, backbones-nothing")
    assert "fakegood" not in get_registry().model_types()
    assert "fakeother" in get_registry().model_types()
    reset_registry()
    monkeypatch.setenv("BACKBONES_DISABLE_PLUGINS", "backbones-fakeother")
    assert "fakeother" not in get_registry().model_types() and "fakegood" in get_registry().model_types()
    reset_registry()
    monkeypatch.setenv("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert get_registry().model_types() == []


def test_unknown_known_architecture_names_the_install_command(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKBONES_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(
        UnknownModelTypeError,
        match=r"unknown model_type 'dinat'; installed model types: none. Install its plugin with: pip install backbones-dinat",
    ):
        get_registry().get("dinat")
    with pytest.raises(UnknownModelTypeError, match="model_type must be a string, got int"):
        get_registry().get(7)  # type: ignore[arg-type]


def test_runtime_registration(site: FakeSite) -> None:
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    registry = get_registry()
    with pytest.raises(
        PluginError, match="model type 'fakegood' is already registered by backbones-fakegood; pass replace=True"
    ):
        registry.register("fakegood", config="a:B", model="a:C")
    registry.register("fakegood", config="a:B", model="a:C", replace=True, aliases=["fg"])
    assert registry.get("fg").distribution == "<runtime>"


def test_concurrent_first_use_discovers_once(site: FakeSite) -> None:
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    registry = Registry()
    barrier = threading.Barrier(8)
    results: list[str] = []

    def use() -> None:
        barrier.wait()
        results.append(registry.get("fakegood").distribution)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["backbones-fakegood"] * 8
    assert sys.modules["fake_good"].CALLS == [1], "the hook ran exactly once"


def test_import_backbones_imports_neither_torch_nor_plugins() -> None:
    heavy = ("torch.", "backbones_", "pydantic", "transformers", "timm")
    loaded = modules_loaded_by("import backbones\nassert backbones.__version__")
    assert sorted(name for name in loaded if name == "torch" or name.startswith(heavy)) == []


def test_listing_plugins_does_not_import_torch() -> None:
    assert "torch" not in modules_loaded_by("from backbones._cli import main\nmain(['list'])")


NAME_HOOK = """
from backbones import hookimpl

@hookimpl
def register_backbones(register):
    pass

@hookimpl
def load_backbone_from_name(name, options):
    if not name.startswith("zoo:"):
        return None
    from backbones_toynet.model import ToyNetBackbone, ToyNetConfig
    indices = options["out_indices"] or [-1]
    return ToyNetBackbone(ToyNetConfig(widths=[4, 8], out_indices=indices))
"""


def test_a_plugin_can_load_names_that_are_not_checkpoints(site: FakeSite, tmp_path: Path) -> None:
    from backbones import AutoBackbone, CheckpointError

    site.install("backbones-fakezoo", "fake_zoo", NAME_HOOK)
    model = AutoBackbone.from_pretrained("zoo:tiny", out_indices=[1], local_files_only=True)
    assert type(model).__name__ == "ToyNetBackbone" and model.out_indices == [1]
    with pytest.raises(CheckpointError, match="not in the local cache and local_files_only=True"):
        AutoBackbone.from_pretrained("someone/not-a-zoo-name", local_files_only=True, cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint directory .* does not exist"):
        AutoBackbone.from_pretrained(tmp_path / "zoo:tiny")  # a Path is a directory, never a name


# -- plugin-API versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("core", "declared", "expected"),
    [
        (
            "1.0",
            None,
            r"does not declare the plugin API it was built for.*must set BACKBONES_PLUGIN_API.*\"1.0\" to \"1.0\"",
        ),
        ("1.0", "2.0", r"built for plugin API 2.0, but this backbones-core implements 1.0.*upgrade backbones-core"),
        ("1.0", "1.1", r"built for plugin API 1.1, but this backbones-core implements 1.0.*upgrade backbones-core"),
        (
            "2.3",
            "1.4",
            r"built for plugin API 1.4, but this backbones-core implements 2.3 and fits plugins built for \"2.0\" to \"2.3\".*upgrade backbones-fake-api",
        ),
        ("1.0", "one", r"BACKBONES_PLUGIN_API = 'one', which is not a \"major.minor\" string"),
        ("1.0", 1.0, r"BACKBONES_PLUGIN_API = 1.0, which is not a \"major.minor\" string"),
    ],
)
def test_incompatible_plugin_is_reported_and_not_loaded(
    site: FakeSite, monkeypatch: pytest.MonkeyPatch, core: str, declared: object, expected: str
) -> None:
    monkeypatch.setattr("backbones._registry.PLUGIN_API_VERSION", core)
    site.install("backbones-fake-api", "fake_api", GOOD_HOOK.format(model_type="fake-api"), api=None)
    if declared is not None:
        path = site.root / "fake_api.py"
        path.write_text(f"BACKBONES_PLUGIN_API = {declared!r}\n" + path.read_text())
    site.install("backbones-fake-ok", "fake_ok", GOOD_HOOK.format(model_type="fake-ok"), api=core)
    registry = get_registry()
    assert "fake-api" not in registry.model_types() and "fake-ok" in registry.model_types()
    (failure,) = _fake_failures(registry)
    assert failure.distribution == "backbones-fake-api"
    assert re.search(expected, str(failure.error)), str(failure.error)
    assert not get_registry().plugin_manager.has_plugin("fake_api"), "an incompatible plugin's hooks are not registered"
    assert sys.modules["fake_api"].CALLS == []


def test_older_minor_version_fits(site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("backbones._registry.PLUGIN_API_VERSION", "1.3")
    site.install("backbones-fake-old", "fake_old", GOOD_HOOK.format(model_type="fake-old"), api="1.1")
    registry = get_registry()
    assert "fake-old" in registry.model_types()
    assert _fake_failures(registry) == []


def test_every_published_plugin_declares_the_api_of_what_it_uses() -> None:
    """Every published plugin but the timm wrapper (which implements a second hook) is a 1.2 manifest; the
    wrapper's module declares a version this core fits."""
    from importlib import metadata

    from backbones._manifest import find_manifest, read_manifest

    points = {ep.dist.metadata["Name"]: ep for ep in metadata.entry_points(group="backbones") if ep.dist}
    ours = {name: point for name, point in points.items() if name in set(KNOWN_DISTRIBUTIONS.values())}
    assert set(ours) == set(KNOWN_DISTRIBUTIONS.values())
    manifests = {name: find_manifest(point.module) for name, point in ours.items()}
    assert [name for name, path in manifests.items() if path is None] == ["backbones-timm"]
    for name, path in manifests.items():
        if path is not None:
            assert read_manifest(path).plugin_api == "1.2", name
    assert ours["backbones-timm"].load().BACKBONES_PLUGIN_API == "1.1"
    registry = get_registry()
    declaring = {entry.distribution for entry in registry.registrations() if entry.image_processor_types}
    assert declaring >= {"backbones-swin", "backbones-convnext", "backbones-dinov2", "backbones-beit"}
    assert [failure.distribution for failure in registry.failures if failure.distribution in ours] == []


def test_core_implements_1_2_and_keeps_loading_1_0_and_1_1_plugins(site: FakeSite) -> None:
    import backbones

    assert backbones.PLUGIN_API_VERSION == "1.2"
    site.install("backbones-fake-ten", "fake_ten", GOOD_HOOK.format(model_type="fake-ten"), api="1.0")
    site.install("backbones-fake-eleven", "fake_eleven", GOOD_HOOK.format(model_type="fake-eleven"), api="1.1")
    site.install("backbones-fake-twelve", "fake_twelve", GOOD_HOOK.format(model_type="fake-twelve"), api="1.2")
    site.install("backbones-fake-thirteen", "fake_thirteen", GOOD_HOOK.format(model_type="fake-13"), api="1.3")
    registry = get_registry()
    assert {"fake-ten", "fake-eleven", "fake-twelve"} <= set(registry.model_types())
    assert registry.get("fake-ten").image_processor is None and registry.get("fake-ten").image_processor_types == ()
    (failure,) = _fake_failures(registry)
    assert failure.distribution == "backbones-fake-thirteen"
    assert "built for plugin API 1.3, but this backbones-core implements 1.2 and fits plugins built for " in str(
        failure.error
    )


def test_list_command_reports_an_incompatible_plugin(site: FakeSite, capsys: pytest.CaptureFixture[str]) -> None:
    from backbones._cli import main

    site.install("backbones-fake-future", "fake_future", GOOD_HOOK.format(model_type="fake-future"), api="9.0")
    main(["list"])
    out = capsys.readouterr().out
    assert "fake-future" not in out.split("plugins that failed to load:")[0]
    assert (
        "fake_future (backbones-fake-future 0.1): PluginError: plugin 'fake_future' (backbones-fake-future) was built "
        "for plugin API 9.0, but this backbones-core implements 1.2" in out
    )


def test_plugin_that_exits_at_import_or_in_its_hook_is_contained(site: FakeSite) -> None:
    site.install("backbones-fake-exit", "fake_exit", "import sys\nsys.exit(3)\n")
    hook_exits = (
        "from backbones import hookimpl\n\n@hookimpl\ndef register_backbones(register):\n    raise SystemExit(4)\n"
    )
    site.install("backbones-fake-hookexit", "fake_hookexit", hook_exits)
    site.install("backbones-fake-fine", "fake_fine", GOOD_HOOK.format(model_type="fake-fine"))
    registry = get_registry()
    assert "fake-fine" in registry.model_types()
    failures = {failure.distribution: failure.summary for failure in _fake_failures(registry)}
    assert failures == {"backbones-fake-exit": "SystemExit: 3", "backbones-fake-hookexit": "SystemExit: 4"}


# -- image processors declared by plugins (plugin API 1.1) ------------------------------------------------------

PROCESSOR_HOOK = """
from backbones import hookimpl

@hookimpl
def register_backbones(register):
    register("{model_type}", config="backbones_toynet.model:ToyNetConfig",
             model="backbones_toynet.model:ToyNetBackbone", {arguments})
"""

FAMILIES = (
    "BeitImageProcessor, BitImageProcessor, ConvNextImageProcessor, DINOv3ViTImageProcessor, "
    "DeformableDetrImageProcessor, RTDetrImageProcessor and ViTImageProcessor"
)


def test_processor_declarations_are_registered(site: FakeSite) -> None:
    arguments = (
        'image_processor="FakeImageProcessor", image_processor_types=["ViTImageProcessor"], '
        'image_processor_classes={"FakeImageProcessor": "backbones_toynet.processing:ToyNetImageProcessor"}'
    )
    site.install(
        "backbones-fakeproc", "fake_proc", PROCESSOR_HOOK.format(model_type="fake-proc", arguments=arguments), api="1.1"
    )
    site.install(
        "backbones-fakefamily",
        "fake_family",
        PROCESSOR_HOOK.format(model_type="fake-family", arguments='image_processor="ConvNextImageProcessor"'),
        api="1.1",
    )
    registry = get_registry()
    assert _fake_failures(registry) == []
    entry = registry.get("fake-proc")
    assert entry.image_processor == "FakeImageProcessor"
    assert entry.image_processor_types == ("FakeImageProcessor", "ViTImageProcessor")
    assert registry.get("fake-family").image_processor_types == ("ConvNextImageProcessor",)
    processor = registry.image_processor("FakeImageProcessor")
    assert processor is not None and (processor.distribution, processor.version) == ("backbones-fakeproc", "0.1")
    assert processor.load_class().__name__ == "ToyNetImageProcessor"
    assert registry.image_processor("ConvNextImageProcessor") is None  # a family: core's, not a plugin's


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            'image_processor="FooImageProcessor"',
            "PluginError: model type 'fake-bad' declares the image processor 'FooImageProcessor', which is neither a "
            f"family backbones-core implements ({FAMILIES}) nor one its plugin implements; give its class in "
            "image_processor_classes={'FooImageProcessor': 'module:Class'}",
        ),
        (
            'image_processor_types=["ViTImageProcessor", "Nope"]',
            "PluginError: model type 'fake-bad' declares the image processor 'Nope', which is neither",
        ),
        (
            "image_processor=3",
            "PluginError: image_processor of 'fake-bad' must be an image_processor_type name (a non-empty string) or "
            "None, got 3",
        ),
        (
            'image_processor_types="ViTImageProcessor"',
            "PluginError: image_processor_types of 'fake-bad' must be a list of non-empty strings, got 'ViTImageProcessor'",
        ),
        (
            'image_processor_classes=["FooImageProcessor"]',
            "PluginError: image_processor_classes of 'fake-bad' must be a dict from image_processor_type names to "
            "classes or 'module:attr' strings, got list",
        ),
        (
            'image_processor_classes={"ViTImageProcessor": "a:B"}',
            "PluginError: image_processor_classes of 'fake-bad' gives a class for 'ViTImageProcessor', a processor "
            "family backbones-core implements; name your own processor differently, or drop it from "
            "image_processor_classes to use core's",
        ),
        (
            'image_processor_classes={"FooImageProcessor": "no_colon"}',
            "PluginError: image processor 'FooImageProcessor' of 'fake-bad' must be a class or a 'module:attr' "
            "string, got 'no_colon'",
        ),
    ],
)
def test_a_bad_processor_declaration_fails_its_plugin(site: FakeSite, arguments: str, message: str) -> None:
    site.install(
        "backbones-fakebadproc",
        "fake_bad_proc",
        PROCESSOR_HOOK.format(model_type="fake-bad", arguments=arguments),
        api="1.1",
    )
    site.install("backbones-fakegood", "fake_good", GOOD_HOOK.format(model_type="fakegood"))
    registry = get_registry()
    (failure,) = _fake_failures(registry)
    assert failure.distribution == "backbones-fakebadproc"
    assert failure.summary.startswith(message), failure.summary
    assert "fake-bad" not in registry.model_types() and "fakegood" in registry.model_types()
    with pytest.raises(
        UnknownModelTypeError, match=r"Plugins that failed to load: backbones-fakebadproc \(PluginError: "
    ):
        registry.get("fake-bad")


def test_a_1_0_plugin_cannot_use_the_1_1_fields(site: FakeSite) -> None:
    hook = PROCESSOR_HOOK.format(model_type="fake-old", arguments='image_processor="ViTImageProcessor"')
    site.install("backbones-fakeold", "fake_old", hook, api="1.0")
    (failure,) = _fake_failures(get_registry())
    assert failure.summary == (
        "PluginError: model type 'fake-old' passes image_processor, which plugin API 1.1 added, but plugin 'fake_old' "
        "declares BACKBONES_PLUGIN_API = '1.0'; declare \"1.1\" (and depend on a backbones-core that implements it)"
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "fake_missing_module:Processor",
            "the image processor 'FooImageProcessor' of backbones-fakelazy, 'fake_missing_module:Processor', cannot be "
            "imported: ModuleNotFoundError: No module named 'fake_missing_module'",
        ),
        (
            "backbones_toynet.processing:Missing",
            "the image processor 'FooImageProcessor' of backbones-fakelazy, 'backbones_toynet.processing:Missing', "
            "does not exist: module 'backbones_toynet.processing' has no attribute 'Missing'",
        ),
        (
            "backbones_toynet.model:ToyNetConfig",
            "the image processor 'FooImageProcessor' of backbones-fakelazy, 'backbones_toynet.model:ToyNetConfig', is "
            "<class 'backbones_toynet.model.ToyNetConfig'>, not a subclass of backbones.ImageProcessor; derive it "
            "from ImageProcessor with @dataclasses.dataclass(frozen=True)",
        ),
    ],
)
def test_a_bad_processor_class_is_reported_when_used(site: FakeSite, tmp_path: Path, target: str, message: str) -> None:
    from backbones import AutoImageProcessor

    arguments = f'image_processor="FooImageProcessor", image_processor_classes={{"FooImageProcessor": "{target}"}}'
    site.install(
        "backbones-fakelazy", "fake_lazy", PROCESSOR_HOOK.format(model_type="fake-lazy", arguments=arguments), api="1.1"
    )
    assert _fake_failures(get_registry()) == [], "a lazy class is imported only when used"
    with pytest.raises(PluginError) as caught:
        AutoImageProcessor.from_dict({"image_processor_type": "FooImageProcessor"})
    assert str(caught.value) == message
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "fake-lazy"}')
    (checkpoint / "preprocessor_config.json").write_text("{}")
    with pytest.raises(PluginError, match=re.escape(message)):
        AutoImageProcessor.from_pretrained(checkpoint)


def test_two_distributions_implementing_one_processor_conflict(site: FakeSite) -> None:
    from backbones import AutoImageProcessor

    classes = 'image_processor_classes={"FooImageProcessor": "backbones_toynet.processing:ToyNetImageProcessor"}'
    for letter in "ab":
        site.install(
            f"backbones-fakeproc{letter}",
            f"fake_proc_{letter}",
            PROCESSOR_HOOK.format(model_type=f"fake-{letter}", arguments=classes),
            api="1.1",
        )
    registry = get_registry()
    assert {"fake-a", "fake-b"} <= set(registry.model_types())
    message = (
        "image processor 'FooImageProcessor' is provided by several distributions: backbones-fakeproca and "
        "backbones-fakeprocb; uninstall all but one"
    )
    with pytest.raises(PluginError, match=re.escape(message)):
        AutoImageProcessor.from_dict({"image_processor_type": "FooImageProcessor"})


def test_runtime_registration_declares_processors(site: FakeSite) -> None:
    from backbones import AutoImageProcessor
    from backbones_toynet.processing import ToyNetImageProcessor

    registry = get_registry()
    with pytest.raises(PluginError, match="model type 'mine' declares the image processor 'MineImageProcessor', which"):
        registry.register("mine", config="a:B", model="a:C", image_processor="MineImageProcessor")
    registry.register(
        "mine",
        config="a:B",
        model="a:C",
        image_processor="MineImageProcessor",
        image_processor_classes={"MineImageProcessor": ToyNetImageProcessor},
    )
    assert registry.get("mine").image_processor == "MineImageProcessor"
    processor = AutoImageProcessor.from_dict(
        {"image_processor_type": "MineImageProcessor", "do_reverse_channels": False}
    )
    assert type(processor) is ToyNetImageProcessor and processor.do_reverse_channels is False


# -- manifests (plugin API 1.2) ---------------------------------------------------------------------------------

MANIFEST = """
plugin_api = "1.2"

[[backbone]]
model_type = "fake-manifest"
config = "backbones_toynet.model:ToyNetConfig"
model = "backbones_toynet.model:ToyNetBackbone"
aliases = ["fake-manifest-alias"]
description = "from a manifest"
image_processor = "FakeManifestProcessor"
image_processor_types = ["ViTImageProcessor"]
image_processor_classes = { FakeManifestProcessor = "backbones_toynet.processing:ToyNetImageProcessor" }

[[backbone]]
model_type = "fake-manifest-two"
config = "backbones_toynet.model:ToyNetConfig"
model = "backbones_toynet.model:ToyNetBackbone"
"""


def test_a_manifest_registers_without_importing_its_package(site: FakeSite) -> None:
    site.install_manifest("backbones-fake-manifest", "fake_manifest", MANIFEST, version="3.1")
    registry = get_registry()
    assert _fake_failures(registry) == []
    assert "fake_manifest" not in sys.modules
    entry = registry.get("fake-manifest-alias")
    assert (entry.model_type, entry.distribution, entry.version, entry.description) == (
        "fake-manifest",
        "backbones-fake-manifest",
        "3.1",
        "from a manifest",
    )
    assert (entry.config, entry.model) == (
        "backbones_toynet.model:ToyNetConfig",
        "backbones_toynet.model:ToyNetBackbone",
    )
    assert entry.aliases == ("fake-manifest-alias",)
    assert entry.image_processor_types == ("FakeManifestProcessor", "ViTImageProcessor")
    processor = registry.image_processor("FakeManifestProcessor")
    assert processor is not None and processor.target == "backbones_toynet.processing:ToyNetImageProcessor"
    assert registry.get("fake-manifest-two").image_processor is None


def test_a_manifest_plugin_is_listed_without_torch(site: FakeSite) -> None:
    site.install_manifest("backbones-fake-manifest", "fake_manifest", MANIFEST)
    code = f"import sys\nsys.path.insert(0, {str(site.root)!r})\nfrom backbones._cli import main\nmain(['list'])"
    loaded = modules_loaded_by(code)
    assert "torch" not in loaded and "fake_manifest" not in loaded


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (
            MANIFEST.replace('description = "from a manifest"', 'descripton = "typo"'),
            r"\[\[backbone\]\] number 1 of plugin manifest .*backbones.toml has unknown key\(s\) descripton; the valid "
            r"keys are model_type, config, model, aliases, description, image_processor, image_processor_types, "
            r"image_processor_classes$",
        ),
        (
            MANIFEST.rstrip().rsplit("\n", 1)[0],  # without the second table's last line, its model
            r"number 2 of plugin manifest .* lacks model; each table needs model_type, config, model$",
        ),
        (
            MANIFEST.replace('plugin_api = "1.2"', ""),
            r"must set plugin_api = \"major.minor\", the plugin API it was built for \(got None\)$",
        ),
        (
            MANIFEST.replace('plugin_api = "1.2"', 'plugin_api = "1.1"'),
            r"declares plugin_api = '1.1' in its manifest .*, but manifests came with plugin API 1.2; declare \"1.2\"",
        ),
        (
            MANIFEST.replace('plugin_api = "1.2"', 'plugin_api = "1.9"'),
            r"built for plugin API 1.9, but this backbones-core implements 1.2 .*upgrade backbones-core",
        ),
        (
            'plugin_api = "1.2"\nbackbone = 3\n',
            r"must hold one \[\[backbone\]\] table per model type \(keys: model_type,",
        ),
        ('plugin_api = "1.2"\nextra = 1\n', r"has unknown key\(s\) extra; the valid keys are plugin_api, backbone$"),
        ("plugin_api = 1.2.3\n", r"cannot be read: TOMLDecodeError: "),
        (
            MANIFEST.replace('config = "backbones_toynet.model:ToyNetConfig"', "config = 3", 1),
            r"config of 'fake-manifest' must be a class or a 'module:attr' string, got int$",
        ),
        (
            MANIFEST.replace('image_processor = "FakeManifestProcessor"', 'image_processor = "NoSuchProcessor"'),
            r"NoSuchProcessor",
        ),
    ],
    ids=[
        "unknown-key",
        "missing-key",
        "no-api",
        "api-1.1",
        "api-too-new",
        "no-tables",
        "top-key",
        "bad-toml",
        "bad-class",
        "unknown-processor",
    ],
)
def test_a_bad_manifest_fails_its_plugin_only(site: FakeSite, manifest: str, message: str) -> None:
    site.install_manifest("backbones-fake-manifest", "fake_manifest", manifest)
    site.install("backbones-fake-ok", "fake_ok", GOOD_HOOK.format(model_type="fake-ok"))
    registry = get_registry()
    (failure,) = _fake_failures(registry)
    assert (failure.name, failure.distribution) == ("fake_manifest", "backbones-fake-manifest")
    assert isinstance(failure.error, PluginError)
    assert re.search(message, str(failure.error)), str(failure.error)
    assert "fake-ok" in registry.model_types()
    assert not {"fake-manifest", "fake-manifest-two"} & set(registry.model_types()), "nothing half-registered"
    assert "fake_manifest" not in sys.modules

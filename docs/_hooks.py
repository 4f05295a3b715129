"""mkdocs hooks (``hooks:`` in mkdocs.yml): one page per registered backbone, generated at build time.

For every model type in ``backbones.get_registry().registrations()`` whose distribution lives in
``plugins/<dir>/``, the page ``backbones/<model_type>.md`` is the plugin's README.md with a stage table
inserted (before the README's own ``## Stages`` section, else before ``## Example``, else at the end).
The table is read from the model itself: the default config is built, the model is built from it with
its parameters on the meta device (no memory, no init), and ``stage_names``, ``num_features`` and
``reductions`` are printed, so the docs cannot drift from the code. ``backbones/index.md`` lists them all,
and the nav entry ``Backbones: backbones/index.md`` of mkdocs.yml becomes a section holding every page.

Anything that would make a page wrong or missing is a warning, so ``mkdocs build --strict`` fails on it:
a plugin that failed to load, a plugin folder that registers no model type, a config or model that
cannot be built.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files

log = get_plugin_logger("backbones-docs")

ROOT = Path(__file__).resolve().parent.parent
SECTION = "backbones"  # folder of the generated pages, inside docs/
NAV_TITLE = "Backbones"
SOURCE_URL = "https://github.com/backbones-dev/backbones/blob/main/"

# Model types whose config has no usable default: the config fields used for their stage table.
EXAMPLE_CONFIGS: dict[str, dict[str, Any]] = {"timm_backbone": {"backbone": "resnet50"}}

STAGE_TABLE_HEADING = "## Stage table (generated)"


@dataclass
class BackbonePage:
    model_type: str
    distribution: str
    plugin_dir: str  # e.g. "plugins/resnet"
    description: str
    aliases: tuple[str, ...]
    markdown: str = ""

    @property
    def src_uri(self) -> str:
        return f"{SECTION}/{self.model_type}.md"


def _plugin_dirs() -> dict[str, str]:
    """Distribution name -> ``plugins/<dir>`` for every plugin folder of this repository."""
    found = {}
    for pyproject in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        if pyproject.parent.name.startswith("_"):
            continue
        match = re.search(r'^name\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
        if match:
            found[match.group(1)] = f"plugins/{pyproject.parent.name}"
    return found


def stage_rows(model_type: str) -> tuple[str, list[tuple[int, str, int, int]], int]:
    """``(config expression, [(index, stage, channels, stride)], parameter count)`` of a model type.

    The default config is used, or the fields of :data:`EXAMPLE_CONFIGS`; the model is built with its
    parameters on the meta device. The test compares these rows with a model built in-process.
    """
    from backbones import get_registry
    from backbones._loading import parameters_on_meta

    registration = get_registry().get(model_type)
    config_class = registration.load_config_class()
    fields = EXAMPLE_CONFIGS.get(model_type, {})
    config = config_class(**fields)
    with parameters_on_meta():
        model = registration.load_model_class()(config)
    rows = [
        (index, name, int(channels), int(stride))
        for index, (name, channels, stride) in enumerate(zip(model.stage_names, model.num_features, model.reductions))
    ]
    parameters = sum(parameter.numel() for parameter in model.parameters())
    arguments = ", ".join(f"{key}={value!r}" for key, value in fields.items())
    return f"{config_class.__name__}({arguments})", rows, parameters


def _stage_table(page: BackbonePage) -> str:
    expression, rows, parameters = stage_rows(page.model_type)
    lines = [
        STAGE_TABLE_HEADING,
        "",
        f"Stages of `{expression}` (`model_type = {page.model_type!r}`), read from the model when these docs",
        f"were built; {parameters / 1e6:.2f} M parameters. `backbones info {page.model_type}` prints the same.",
        "",
        "| index | stage | channels | stride |",
        "| --- | --- | --- | --- |",
        *(f"| {index} | `{name}` | {channels} | {stride} |" for index, name, channels, stride in rows),
    ]
    if page.model_type in EXAMPLE_CONFIGS:
        lines += ["", f"`{page.model_type}` has no default config: the table is for the fields above."]
    return "\n".join(lines) + "\n"


def _rewrite_links(markdown: str, source: str, pages: dict[str, str], docs_prefix: str | None) -> str:
    """Rewrite the relative links of ``source`` (a repository path) for its place in the site.

    Links to other plugins' READMEs become their pages (``pages``); links into docs/ get ``docs_prefix``
    in place of ``docs/`` (or stay as written when it is None); any other repository file becomes a link
    to its source.
    """

    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^([a-z][a-z0-9+.-]*:|#)", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if resolved in pages:
            new = pages[resolved]
        elif resolved.startswith("docs/"):
            if docs_prefix is None:
                return match.group(0)
            new = docs_prefix + resolved[len("docs/") :]
        else:
            new = SOURCE_URL + resolved
        return f"{match.group(1)}({new}{'#' + anchor if anchor else ''})"

    return re.sub(r"(\])\(([^)\s]+)\)", replace, markdown)


def _insert_table(readme: str, table: str) -> str:
    for heading in ("## Stages", "## Example"):
        match = re.search(rf"^{re.escape(heading)}\b.*$", readme, re.MULTILINE)
        if match:
            return readme[: match.start()] + table + "\n" + readme[match.start() :]
    return readme.rstrip() + "\n\n" + table


def _index(pages: list[BackbonePage]) -> str:
    lines = [
        f"# {NAV_TITLE}",
        "",
        "One page per model type, each its plugin's README with a stage table generated from the installed",
        "plugin when these docs are built. Install only the plugins you use: `pip install backbones-core backbones-<name>`.",
        "",
        "| model type | distribution | aliases | description |",
        "| --- | --- | --- | --- |",
    ]
    for page in pages:
        aliases = ", ".join(f"`{alias}`" for alias in page.aliases) or "-"
        link = f"[`{page.model_type}`]({page.model_type}.md)"
        lines.append(f"| {link} | `{page.distribution}` | {aliases} | {page.description} |")
    return "\n".join(lines) + "\n"


def collect_pages() -> list[BackbonePage]:
    """The backbone pages, with their markdown (warnings for anything missing or broken)."""
    from backbones import get_registry

    registry = get_registry()
    plugin_dirs = _plugin_dirs()
    for failure in registry.failures:
        log.warning(f"plugin {failure.name} ({failure.distribution}) failed to load: {failure.summary}")
    for name, distributions in registry.conflicts.items():
        log.warning(f"model type {name!r} is provided by {' and '.join(distributions)}")
    pages = []
    for registration in registry.registrations():
        plugin_dir = plugin_dirs.get(registration.distribution)
        if plugin_dir is None:
            log.info(f"no page for {registration.model_type!r}: {registration.distribution} is not in plugins/")
            continue
        pages.append(
            BackbonePage(
                registration.model_type,
                registration.distribution,
                plugin_dir,
                registration.description,
                registration.aliases,
            )
        )
    registered = {page.distribution for page in pages}
    for distribution, plugin_dir in plugin_dirs.items():
        if distribution not in registered and not any(f.distribution == distribution for f in registry.failures):
            log.warning(
                f"{plugin_dir} ({distribution}) registers no model type: is it installed? (python3 dev.py setup)"
            )
    # Links between plugin READMEs go to the page of the linked plugin's (first) model type.
    readme_pages: dict[str, str] = {}
    for page in pages:
        readme_pages.setdefault(f"{page.plugin_dir}/README.md", f"{page.model_type}.md")
    for page in pages:
        readme_path = f"{page.plugin_dir}/README.md"
        readme = (ROOT / readme_path).read_text(encoding="utf-8")
        try:
            table = _stage_table(page)
        except Exception as error:
            log.warning(f"cannot build the stage table of {page.model_type!r}: {type(error).__name__}: {error}")
            table = ""
        page.markdown = _insert_table(_rewrite_links(readme, readme_path, readme_pages, "../"), table)
    return pages


_pages: list[BackbonePage] = []


def on_config(config: Any) -> Any:
    """Generate the pages and expand the ``Backbones`` nav entry into a section holding them."""
    _pages[:] = collect_pages()
    section = [f"{SECTION}/index.md", *({page.model_type: page.src_uri} for page in _pages)]
    nav = config.nav or []
    for position, entry in enumerate(nav):
        if isinstance(entry, dict) and entry.get(NAV_TITLE) == f"{SECTION}/index.md":
            nav[position] = {NAV_TITLE: section}
            break
    else:
        log.warning(f"mkdocs.yml's nav has no entry '{NAV_TITLE}: {SECTION}/index.md' for the backbone pages")
    return config


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, f"{SECTION}/index.md", content=_index(_pages)))
    for page in _pages:
        files.append(File.generated(config, page.src_uri, content=page.markdown))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Links from a docs page to repository files outside docs/ (e.g. ``../benchmarks/README.md``) become
    links to their source, so pages written to read well on GitHub also build in strict mode."""
    if page.file.generated_by or page.file.src_uri.startswith(f"{SECTION}/"):
        return markdown
    return _rewrite_links(markdown, posixpath.join("docs", page.file.src_uri), {}, None)

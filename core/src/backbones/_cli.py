"""The ``backbones`` command: ``list``, ``info``, ``extract`` and ``new-plugin``.

``list`` never imports torch. ``info`` builds the model with parameters on the meta device, so it is
fast and needs no weights. ``extract`` runs a checkpoint on an image and prints, saves or plots its maps.
``new-plugin`` writes a working plugin distribution from core's templates (``backbones._scaffold``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BackboneError

if TYPE_CHECKING:
    from ._backbone import Backbone
    from ._config import BackboneConfig
    from ._image import ImageProcessor
    from ._options import LoadOptions

__all__ = ["main"]


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(value) for value in header], *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    from ._registry import get_registry

    registry = get_registry()
    rows = []
    for entry in registry.registrations():
        aliases = [name for name in registry.model_types() if registry.get(name) is entry and name != entry.model_type]
        rows.append(
            [
                entry.model_type,
                entry.distribution,
                entry.version or "-",
                ", ".join(aliases) or "-",
                entry.description or "",
            ]
        )
    if rows:
        print(_table(rows, ["model type", "distribution", "version", "aliases", "description"]))
    else:
        print("no backbone plugins installed; e.g. pip install backbones-swin")
    for name, distributions in sorted(registry.conflicts.items()):
        print(f"\nconflict: model type {name!r} is provided by {' and '.join(distributions)}; uninstall all but one")
    if registry.failures:
        print("\nplugins that failed to load:")
        for failure in registry.failures:
            print(f"  {failure.name} ({failure.distribution} {failure.version}): {failure.summary}")
            if args.verbose:
                print("    " + failure.details.rstrip().replace("\n", "\n    "))
    return 0


def _is_model_type(target: str) -> bool:
    """A bare name like ``swin`` is a model type; a directory or ``org/name`` is a checkpoint."""
    from ._hub import is_local

    return not is_local(target) and "/" not in target


def _load_config(target: str, options: LoadOptions) -> BackboneConfig:
    from ._auto import AutoBackboneConfig
    from ._registry import get_registry

    if _is_model_type(target):
        return AutoBackboneConfig.for_model(get_registry().get(target).model_type)
    return AutoBackboneConfig.from_pretrained(target, load_options=options)


def _cmd_info(args: argparse.Namespace) -> int:
    from ._loading import parameters_on_meta
    from ._registry import get_registry

    config = _load_config(args.target, _load_options(args))
    model_class = get_registry().get(config.model_type).load_model_class()
    with parameters_on_meta():
        model: Backbone = model_class(config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    selected = set(model.out_features)
    rows = [
        [name, channels, reduction, "yes" if name in selected else ""]
        for name, channels, reduction in zip(model.stage_names, model.num_features, model.reductions)
    ]
    print(f"{config.model_type}: {type(model).__name__}, {parameters:,} parameters ({parameters / 1e6:.2f} M)")
    print(_table(rows, ["stage", "channels", "stride", "selected"]))
    return 0


def _image_processor(args: argparse.Namespace) -> tuple[ImageProcessor, str]:
    """The checkpoint's preprocessor_config.json when it has a usable one, else the documented defaults.

    ``--size`` replaces the resize (and crop) of either; the image is always converted to RGB.
    """
    from ._errors import ConfigError
    from ._image import ImageProcessor, checkpoint_image_processor

    processor = None
    if _is_model_type(args.model):
        source = "backbones' defaults: a model type has no preprocessor_config.json"
    else:
        source = "backbones' defaults: the checkpoint has no preprocessor_config.json"
        try:
            processor = checkpoint_image_processor(args.model, **_load_options(args).hub_kwargs())
        except ConfigError as error:
            source = f"backbones' defaults: the checkpoint's preprocessor_config.json is unusable: {error}"
    if processor is None:
        processor = ImageProcessor()
    else:
        source = f"the checkpoint's preprocessor_config.json ({processor.image_processor_type})"
    if args.size is not None:
        size = {"height": args.size, "width": args.size} if args.size > 0 else processor.size
        processor = processor.replace(do_resize=args.size > 0, size=size, crop_pct=None, do_center_crop=False)
        source += f", resized by --size {args.size}"
    return processor.replace(do_convert_rgb=True), source


def _read_image(path: Path, processor: ImageProcessor) -> Any:
    """Open an image and preprocess it into a ``(1, 3, H, W)`` tensor."""
    from ._image import require_image_extra

    require_image_extra()
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise BackboneError(f"image {path} does not exist") from None
    except OSError as error:
        raise BackboneError(f"cannot read image {path}: {error}") from None
    return processor(image, return_tensors="pt")["pixel_values"]


def _cmd_extract(args: argparse.Namespace) -> int:
    import torch

    from ._auto import AutoBackbone

    options = _load_options(args)
    if _is_model_type(args.model):
        config = _load_config(args.model, options)
        model = AutoBackbone.from_config(config, **options.selection()).eval()
        print(f"note: {args.model!r} is a model type, so the weights are random (pass a checkpoint for real features)")
    else:
        loaded = AutoBackbone.from_pretrained(args.model, load_options=options)
        assert not isinstance(loaded, tuple)
        model = loaded
    processor, source = _image_processor(args)
    print(f"preprocessing: {processor.describe()} ({source})")
    pixels = _read_image(Path(args.image), processor)
    with torch.inference_mode():
        maps = model(pixels).feature_maps
    rows = [
        [
            name,
            "x".join(str(d) for d in fmap.shape[1:]),
            stride,
            f"{fmap.mean():.4f}",
            f"{fmap.std():.4f}",
            f"{fmap.abs().max():.4f}",
        ]
        for name, fmap, stride in zip(model.out_features, maps, model.out_reductions)
    ]
    print(_table(rows, ["stage", "channels x height x width", "stride", "mean", "std", "max |x|"]))
    if args.save:
        from safetensors.torch import save_file

        from ._files import atomic_write

        tensors = {name: fmap[0].contiguous() for name, fmap in zip(model.out_features, maps)}
        atomic_write(
            Path(args.save), lambda tmp: save_file(tensors, str(tmp), metadata={"image": os.fspath(args.image)})
        )
        print(f"saved {len(tensors)} feature maps to {args.save}")
    if args.plot:
        _plot(maps, model.out_features, Path(args.plot))
        print(f"plotted feature maps to {args.plot}")
    return 0


def _plot(maps: Sequence[Any], names: Sequence[str], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackboneError("--plot needs matplotlib: pip install 'backbones-core[plot]'") from None
    from ._files import atomic_write

    figure, axes = plt.subplots(1, len(maps), figsize=(3 * len(maps), 3.2), squeeze=False)
    for axis, name, fmap in zip(axes[0], names, maps):
        energy = fmap[0].float().pow(2).mean(dim=0).sqrt()
        axis.imshow(energy.cpu().numpy(), cmap="viridis")
        axis.set_title(f"{name}\n{fmap.shape[1]}x{fmap.shape[2]}x{fmap.shape[3]}", fontsize=9)
        axis.axis("off")
    figure.suptitle("feature-map energy (RMS over channels)", fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=100))
    plt.close(figure)


def _load_options(args: argparse.Namespace) -> LoadOptions:
    """The :class:`LoadOptions` the command line sets; the others keep their defaults."""
    from ._options import LoadOptions

    return LoadOptions(
        revision=getattr(args, "revision", None) or None,
        local_files_only=bool(getattr(args, "local_files_only", False)),
        out_indices=getattr(args, "out_indices", None),
    )


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from ._scaffold import new_plugin

    directory = Path(args.dir) if args.dir else Path("backbones-" + args.name.replace("_", "-"))
    files = new_plugin(args.name, directory, family=args.family)
    print(f"wrote a {args.family} plugin, backbones-{args.name.replace('_', '-')}, to {directory}:")
    for path in files:
        print(f"  {path}")
    print(
        f"next: pip install -e {directory} && pytest {directory / 'tests'}  "
        "(then fill in the parity skeleton, the README and the metadata)"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="backbones", description="Computer-vision backbones from installed plugins.")
    parser.add_argument("--version", action="version", version=f"backbones-core {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    listing = commands.add_parser("list", help="installed model types and plugins (and failed plugins)")
    listing.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of failed plugins")
    listing.set_defaults(run=_cmd_list)

    info = commands.add_parser("info", help="stages, channels, strides and parameter count")
    info.add_argument("target", help="a model type (default config), a checkpoint directory or a hub id")
    info.set_defaults(run=_cmd_info)

    extract = commands.add_parser("extract", help="run a backbone on an image and report its feature maps")
    extract.add_argument("image", help="image file (any format Pillow reads)")
    extract.add_argument("--model", required=True, help="checkpoint directory, hub id, or model type (random weights)")
    extract.add_argument("--out-indices", type=int, nargs="+", help="stages to output (default: the checkpoint's)")
    extract.add_argument(
        "--size",
        type=int,
        help="resize to SIZExSIZE instead (0 keeps the native size); default: the checkpoint's "
        "preprocessor_config.json, else 224",
    )
    extract.add_argument("--save", metavar="FILE.safetensors", help="save the maps, keyed by stage name")
    extract.add_argument("--plot", metavar="FILE.png", help="save a picture of the maps")
    extract.set_defaults(run=_cmd_extract)

    scaffold = commands.add_parser("new-plugin", help="write a new plugin distribution that passes its tests")
    scaffold.add_argument("name", help="model type of the new architecture, e.g. foonet (lowercase, '-' or '_')")
    scaffold.add_argument("--dir", help="folder to create (default: ./backbones-NAME); it must not exist")
    scaffold.add_argument(
        "--family",
        choices=["cnn", "vit", "hierarchical"],
        default="cnn",
        help="starting architecture: residual conv stages, a plain ViT read at several depths, or "
        "patch-merging attention stages (default: cnn)",
    )
    scaffold.set_defaults(run=_cmd_new_plugin)

    for sub in (info, extract):
        sub.add_argument("--revision", help="hub branch, tag or commit")
        sub.add_argument("--local-files-only", action="store_true", help="never use the network")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``backbones`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (BackboneError, ValueError) as error:
        print(f"backbones {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

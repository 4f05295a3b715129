"""The main job, end to end, with no network: a Swin checkpoint in transformers' format is loaded with
AutoBackbone, its multi-scale feature maps are extracted, and (where transformers is installed) they are
checked against transformers' own SwinBackbone.

Run it with `python3 dev.py demo` (which sets up the environment first).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backbones import AutoBackbone, AutoBackboneConfig, get_registry
from backbones._cli import main as cli

OUT = Path(__file__).resolve().parent.parent / "out"


def make_checkpoint(directory: Path) -> str:
    """Save swin-tiny (random weights) as transformers would; return who wrote it."""
    try:
        from transformers import SwinConfig, SwinForImageClassification
        from transformers.utils import logging as transformers_logging
    except ImportError:
        config = AutoBackboneConfig.for_model("swin", out_indices=[1, 2, 3, 4])
        AutoBackbone.from_config(config).save_pretrained(directory)
        return "backbones (transformers is not installed)"
    transformers_logging.set_verbosity_error()  # our own load report is the one to read
    torch.manual_seed(0)
    SwinForImageClassification(SwinConfig(num_labels=10)).save_pretrained(directory)
    return "transformers' SwinForImageClassification (a task checkpoint: keys under 'swin.', plus a classifier)"


def main() -> int:
    registry = get_registry()
    print("installed backbones:", ", ".join(registry.model_types()))
    if "swin" not in registry.model_types():
        print("the demo needs backbones-swin: pip install backbones-swin")
        return 1
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "swin-tiny"
        writer = make_checkpoint(checkpoint)
        print(f"\n1. checkpoint written by {writer}")

        start = time.perf_counter()
        model, report = AutoBackbone.from_pretrained(checkpoint, out_indices=[1, 2, 3, 4], output_loading_info=True)
        print(f"2. AutoBackbone.from_pretrained: {type(model).__name__} in {time.perf_counter() - start:.2f} s")
        print("   " + str(report).replace("\n", "\n   "))

        pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            maps = model(pixels).feature_maps
        print("3. feature maps at 224x224:")
        for name, fmap, stride in zip(model.out_features, maps, model.out_reductions):
            print(f"   {name}: {tuple(fmap.shape[1:])} (stride {stride})")

        try:
            from transformers import SwinBackbone
        except ImportError:
            print("4. (install transformers to compare against its SwinBackbone)")
        else:
            reference = SwinBackbone.from_pretrained(checkpoint, out_indices=[1, 2, 3, 4]).eval()
            with torch.inference_mode():
                expected = reference(pixels).feature_maps
            worst = max((a - b).abs().max().item() for a, b in zip(maps, expected))
            print(f"4. same maps as transformers' SwinBackbone: max abs diff {worst:.2e}")

        image = OUT / "demo-image.png"
        grid = np.indices((224, 224)).sum(axis=0)
        Image.fromarray(
            np.stack([(grid * 3) % 256, (grid * 7) % 256, np.full_like(grid, 128)], -1).astype(np.uint8)
        ).save(image)
        print("5. backbones extract:")
        return cli(
            [
                "extract",
                str(image),
                "--model",
                str(checkpoint),
                "--out-indices",
                "1",
                "2",
                "3",
                "4",
                "--plot",
                str(OUT / "demo-maps.png"),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())

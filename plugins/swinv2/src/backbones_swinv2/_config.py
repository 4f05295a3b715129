"""Configuration of Swin Transformer V2. Field names and defaults follow transformers' Swinv2Config.

The fields Swin V2 shares with Swin are defined once, in backbones-swin's ``SwinFamilyConfig``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from backbones_swin import SwinFamilyConfig

__all__ = ["Swinv2Config"]


class Swinv2Config(SwinFamilyConfig):
    """Configuration of a Swin Transformer V2 backbone (defaults: transformers' ``Swinv2Config()``).

    Args:
        pretrained_window_sizes: Window side each stage was pre-trained with, or ``0`` for "the same as
            its window". It sets the scale of the continuous position bias's input coordinates, so that
            a model fine-tuned with larger windows keeps the bias it learned; one entry per stage (extra
            entries are ignored, as transformers ignores them).
        encoder_stride: Upsampling factor of transformers' masked-image-modeling decoder (kept for
            compatibility; unused by the backbone).
        **fields: See :class:`backbones_swin.SwinFamilyConfig`. ``image_size`` matters here: the window
            of a stage whose pre-training feature map (``image_size / patch_size / 2**i`` patches high) is
            smaller than ``window_size`` shrinks to that map, and such a stage never shifts its windows
            (see :attr:`stage_window_sizes`). ``use_absolute_embeddings`` must stay ``False``.
    """

    model_type: ClassVar[str] = "swinv2"
    reference_config_keys: ClassVar[frozenset[str]] = frozenset({"hidden_size", "num_layers"})
    """Keys of transformers' config.json without effect here: transformers' values derived from embed_dim and depths."""
    absolute_embeddings_refused_by: ClassVar[str | None] = "Swinv2"

    pretrained_window_sizes: list[int] = [0, 0, 0, 0]
    encoder_stride: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _check_swinv2(self) -> Swinv2Config:
        stages = len(self.depths)
        if len(self.pretrained_window_sizes) < stages:
            raise ValueError(
                f"pretrained_window_sizes has {len(self.pretrained_window_sizes)} entries but depths has {stages}; "
                "give one pre-training window size per stage (0 means: the stage's own window size)"
            )
        for index, size in enumerate(self.pretrained_window_sizes[:stages]):
            if size < 0 or size == 1:
                raise ValueError(
                    f"pretrained_window_sizes[{index}]={size} is invalid: use 0 (scale the position-bias "
                    "coordinates by the stage's own window) or a pre-training window side of at least 2"
                )
        grid = self._grid_height()
        if grid < 2 ** (stages - 1):
            raise ValueError(
                f"image_size {self.image_size} with patch_size {self.patch_size} gives a {grid}-patch-high grid, "
                f"too small for {stages} stages (stage {stages} would be {grid // 2 ** (stages - 1)} patches high "
                f"and have no window); use an image_size of at least patch_size * 2**{stages - 1} = "
                f"{self.patch_size * 2 ** (stages - 1)}"
            )
        return self

    def _grid_height(self) -> int:
        height = self.image_size if isinstance(self.image_size, int) else self.image_size[0]
        return height // self.patch_size

    @property
    def stage_window_sizes(self) -> list[int]:
        """Window side of each stage: ``window_size``, or the stage's pre-training feature map when smaller.

        As in transformers, the map is ``image_size // patch_size // 2**i`` patches high (the height decides
        for both axes), fixed when the model is built: inputs of other sizes keep these windows.
        """
        grid = self._grid_height()
        return [min(grid // 2**index, self.window_size) for index in range(len(self.depths))]

    @property
    def stage_shift_sizes(self) -> list[int]:
        """Shift of the shifted-window blocks (every second block) of each stage.

        ``window_size // 2``, or ``0`` for a stage whose pre-training feature map fits in one window.
        """
        grid = self._grid_height()
        return [
            self.window_size // 2 if grid // 2**index > self.window_size else 0 for index in range(len(self.depths))
        ]

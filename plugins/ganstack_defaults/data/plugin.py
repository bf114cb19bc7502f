"""The default ``dataset`` plugins: StackGAN's preprocessed data, your own folder, synthetic shapes.

Each factory is ``factory(options, ctx: DataContext)`` and returns a map-style dataset meeting
:class:`ganstack.interfaces.CaptionDataset`; the readers live in the ``data_*`` modules.
"""

from __future__ import annotations

from ganstack.components.registry import Register
from ganstack.hookspecs import hookimpl
from ganstack.interfaces import DataContext
from ganstack_defaults.data.dataset import CaptionImageDataset
from ganstack_defaults.data.folder import CaptionedFolderOptions, build_captioned_folder
from ganstack_defaults.data.stackgan import (
    StackGANBirdsOptions,
    StackGANCocoOptions,
    StackGANFlowersOptions,
    build_stackgan,
)
from ganstack_defaults.shapes.dataset import ShapesDataset, ShapesOptions, build_shapes


def stackgan_birds(options: StackGANBirdsOptions, ctx: DataContext) -> CaptionImageDataset:
    """CUB-200-2011 birds in StackGAN's preprocessed layout, cropped to their bounding boxes."""
    return build_stackgan("stackgan-birds", options, ctx)


def stackgan_flowers(options: StackGANFlowersOptions, ctx: DataContext) -> CaptionImageDataset:
    """Oxford-102 flowers in StackGAN's preprocessed layout."""
    return build_stackgan("stackgan-flowers", options, ctx)


def stackgan_coco(options: StackGANCocoOptions, ctx: DataContext) -> CaptionImageDataset:
    """MS-COCO in StackGAN's preprocessed layout (images found by name under root)."""
    return build_stackgan("stackgan-coco", options, ctx)


def captioned_folder(options: CaptionedFolderOptions, ctx: DataContext) -> CaptionImageDataset:
    """Your own images with captions (captions.jsonl, or a .txt beside each image)."""
    return build_captioned_folder(options, ctx)


def shapes_dataset(options: ShapesOptions, ctx: DataContext) -> ShapesDataset:
    """Synthetic captioned shapes with held-out colour pairs: a fast, checkable task."""
    return build_shapes(options, ctx)


@hookimpl
def register_components(register: Register) -> None:
    register("dataset", "stackgan-birds", stackgan_birds, options=StackGANBirdsOptions)
    register("dataset", "stackgan-flowers", stackgan_flowers, options=StackGANFlowersOptions)
    register("dataset", "stackgan-coco", stackgan_coco, options=StackGANCocoOptions)
    register("dataset", "captioned-folder", captioned_folder, options=CaptionedFolderOptions)
    register("dataset", "shapes", shapes_dataset, options=ShapesOptions)

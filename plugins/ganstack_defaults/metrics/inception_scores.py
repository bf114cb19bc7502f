"""The ``inception-score`` and ``fid`` metrics: Inception-v3 judgements of generated images.

Both generate one image per position of the first ``n`` of ``split`` (see
:mod:`~ganstack_defaults.metrics.sources`) and report the network's name and the sha256 of its
weights file beside the score, because a score means nothing without the network that gave it. FID's reference statistics (the real
images of the same examples) are computed once and cached under ``cache_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import validators as v
from torch import Tensor, nn

from ganstack.errors import DataError, UserError
from ganstack.interfaces import CaptionDataset, ImageSource
from ganstack_defaults.metrics import inception
from ganstack_defaults.metrics.cache import cache_file, load_entry, save_entry, sha256_file
from ganstack_defaults.metrics.formulas import FeatureMoments, frechet_distance, inception_score
from ganstack_defaults.metrics.inception import (
    NETWORKS,
    BackboneLoader,
    check_weights_file,
    network_loader,
)
from ganstack_defaults.metrics.sources import CAPTION_MODES, generate, item_batches, item_fields, real_images

FID_CACHE_VERSION = 2  # 2: the key names the network
FID_NETWORKS = ("torchvision", "pytorch-fid")  # the CUB classifier is no feature extractor of the literature


@attrs.define(frozen=True, kw_only=True)
class InceptionScoreOptions:
    """Inception Score settings; ``weights`` is required, as nothing is downloaded.

    ``weights``: a state dict file of the ``network`` (a relative path: next to the recipe, then
    the working folder); its sha256 and the network's name are reported beside the score;
    ``network``: which Inception-v3 judges (docs/metrics.md): ``torchvision`` (a torchvision-layout
    file, e.g. ImageNet's), ``stackgan-inception`` (StackGAN's CUB model, converted by
    ``ganstack import stackgan-inception``; the published CUB scores) or ``pytorch-fid`` (the
    2015 ImageNet graph of OpenAI's IS code; the published COCO scores); ``splits``: the images
    are scored in this many equal parts and the mean and standard deviation over the parts
    reported (10 in the paper); ``batch_size``: images generated and judged at a time;
    ``num_classes``: the number of classes scored, checked (null: read from the file's ``fc``
    layer; a background class is not counted); ``split``: the split whose captions drive
    generation; ``captions``: ``first`` (each example's caption as the split gives it),
    ``single`` (its first caption with that caption's own embedding) or ``all`` (position ``i``
    takes caption ``i // len`` of example ``i % len``: every caption once); ``stage``: which
    stage's images are scored, 1-based (null: the last); ``seed``: noise seed, batch ``b`` uses
    ``seed + b``, so a stack's score repeats
    """

    weights: str
    network: str = attrs.field(default="torchvision", validator=v.in_(tuple(NETWORKS)))
    splits: int = attrs.field(default=10, validator=v.ge(1))
    batch_size: int = attrs.field(default=50, validator=v.ge(1))
    num_classes: int | None = attrs.field(default=None, validator=v.optional(v.ge(2)))  # None: from fc
    split: str = "test"  # whose captions drive generation
    captions: str = attrs.field(default="first", validator=v.in_(CAPTION_MODES))
    stage: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))  # 1-based; None: last
    seed: int = 0


@attrs.define(frozen=True, kw_only=True)
class FidOptions:
    """FID settings; ``weights`` is required, as nothing is downloaded.

    ``weights``: a state dict file of the ``network``, as for ``inception-score``; FID compares its
    2048-d pool3 features; its sha256 and the network's name are reported beside the score;
    ``network``: ``torchvision`` (a torchvision-layout file) or ``pytorch-fid`` (pytorch-fid's
    ``pt_inception-2015-12-05-6726825d.pth``, the network of the published FIDs; docs/metrics.md);
    ``batch_size``: images generated and judged at a time; ``split``: the split whose first ``n``
    positions give both the captions to generate from and the real images to compare with (each
    real image counted once); ``captions``: ``first``, ``single`` or ``all``, as for ``inception-score``;
    ``stage``: which stage's images are scored, 1-based (null: the last), against real images at
    that stage's resolution; ``seed``: noise seed, batch ``b`` uses ``seed + b``;
    ``cache_dir``: folder caching the real images' statistics, keyed by the weights' sha256, the
    network and its preprocessing, the dataset and ``n`` (delete it after changing a custom dataset's data)
    """

    weights: str
    network: str = attrs.field(default="torchvision", validator=v.in_(FID_NETWORKS))
    batch_size: int = attrs.field(default=50, validator=v.ge(1))
    split: str = "test"  # real images and captions come from this split
    captions: str = attrs.field(default="first", validator=v.in_(CAPTION_MODES))
    stage: int | None = attrs.field(default=None, validator=v.optional(v.ge(1)))
    seed: int = 0
    cache_dir: str = ".ganstack-cache/fid"


class _InceptionJudged:
    """Holds the weights file, its hash and the lazily built backbone on the metric's device."""

    def __init__(self, weights: str, network: str, device: str, load_backbone: BackboneLoader | None,
                 recipe_dir: Path | None = None) -> None:
        self.weights = check_weights_file(weights, recipe_dir)
        self.network = NETWORKS[network]
        self.device = torch.device(device)
        self._load_backbone = load_backbone or network_loader(network)
        self._backbone: nn.Module | None = None
        self._sha256: str | None = None

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_file(self.weights)
        return self._sha256

    def identity(self) -> dict[str, str]:
        """What is recorded with a score: the network, its weights' hash, and a warning where the
        ``pytorch-fid`` file is not the released one (its scores then do not compare with papers')."""
        out = {"network": self.network.name, "weights_sha256": self.weights_sha256}
        published = self.weights_sha256.startswith(inception.PUBLISHED_FID_SHA256_PREFIX)
        if self.network.name == "pytorch-fid" and not published:
            out["note"] = (f"these pytorch-fid weights are not the released file (its sha256 begins "
                           f"{inception.PUBLISHED_FID_SHA256_PREFIX}): not comparable with published scores")
        elif self.network.name != "pytorch-fid" and published:
            out["note"] = (f"pytorch-fid's weights judged by the `{self.network.name}` network, which pools "
                           "differently: set network: pytorch-fid to score as the papers do")
        return out

    def prepare(self) -> None:
        """Load and check the weights once (the metric is built without reading them)."""
        if self._backbone is None:
            self._backbone = self._load_backbone(self.weights, self.device)

    def judge(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, pool features) of images in [-1, 1]."""
        self.prepare()
        assert self._backbone is not None
        with torch.no_grad():
            return self._backbone(images.to(self.device))


class InceptionScore(_InceptionJudged):
    """Inception Score of generated images; ``load_backbone`` is the test seam (see metric_inception)."""

    def __init__(self, options: InceptionScoreOptions, device: str,
                 load_backbone: BackboneLoader | None = None, recipe_dir: Path | None = None) -> None:
        super().__init__(options.weights, options.network, device, load_backbone, recipe_dir)
        self.options = options

    def evaluate(self, source: ImageSource, n: int) -> dict[str, Any]:
        o = self.options
        if n < o.splits:
            raise UserError(f"the Inception Score needs at least as many images as splits: n={n}, "
                            f"splits={o.splits}", path="splits",
                            fix="evaluate more images (evaluation.n) or lower `splits`")
        probs = []
        dataset = source.dataset(o.split)
        for b, (_, items) in enumerate(item_batches(dataset, n, o.batch_size, o.split, o.captions)):
            logits, _ = self.judge(generate(source, [it["caption"] for it in items], o.seed + b, o.stage,
                                            item_fields(dataset, items)))
            if o.num_classes is not None and logits.shape[1] != o.num_classes:
                raise UserError(f"num_classes is {o.num_classes} but the Inception weights "
                                f"{self.weights} have {logits.shape[1]} classes", path="num_classes",
                                fix="leave `num_classes` out to read it from the weights file")
            probs.append(torch.softmax(logits.double(), dim=1).float().cpu())
        mean, std = inception_score(torch.cat(probs), o.splits)
        return {"is_mean": mean, "is_std": std, **self.identity()}


def dataset_identity(dataset: CaptionDataset, split: str, resolution: int) -> dict[str, Any]:
    """What names a split's real images in a cache key.

    The default datasets carry a ``fingerprint`` of their data and options; any other dataset is
    known by its class, split, length and resolution only (clear ``cache_dir`` after changing it).
    """
    cls = type(dataset)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "split": split, "len": len(dataset),
            "resolution": resolution, "fingerprint": getattr(dataset, "fingerprint", None)}


class FrechetInceptionDistance(_InceptionJudged):
    """FID between generated images and the split's real images; ``load_backbone`` as above."""

    def __init__(self, options: FidOptions, device: str,
                 load_backbone: BackboneLoader | None = None, recipe_dir: Path | None = None) -> None:
        super().__init__(options.weights, options.network, device, load_backbone, recipe_dir)
        self.options = options

    def _reference_key(self, dataset: CaptionDataset, resolution: int, n_real: int) -> dict[str, Any]:
        return {"what": "fid-reference", "version": FID_CACHE_VERSION, "weights_sha256": self.weights_sha256,
                "network": self.network.name, "preprocessing": self.network.preprocessing,
                "dataset": dataset_identity(dataset, self.options.split, resolution), "n": n_real}

    def evaluate(self, source: ImageSource, n: int) -> dict[str, Any]:
        o = self.options
        if n < 2:
            raise UserError(f"FID needs at least 2 images to estimate a covariance, got n={n}", path="n",
                            fix="evaluate more images (evaluation.n; FID is usually reported on 10,000+)")
        dataset = source.dataset(o.split)
        batches = item_batches(dataset, n, o.batch_size, o.split, o.captions)  # refuses an empty split
        n_real = min(n, len(dataset))  # positions past the split repeat it: scored once as real images
        if n_real < 2:
            raise DataError(f"FID needs at least 2 real images; the '{o.split}' split has {len(dataset)}",
                            path="split", fix="choose a larger split in the metric's `split` option")
        resolution = real_images([dataset[0]], o.stage).shape[-1]
        key = self._reference_key(dataset, resolution, n_real)
        path = cache_file(Path(o.cache_dir), "fid-reference", key)
        reference = load_entry(path, key)
        real, fake = FeatureMoments(), FeatureMoments()
        for b, (positions, items) in enumerate(batches):
            if reference is None:
                unseen = [it for i, it in zip(positions, items, strict=True) if i < n_real]
                if unseen:
                    real.add(self.judge(real_images(unseen, o.stage))[1])
            fake.add(self.judge(generate(source, [it["caption"] for it in items], o.seed + b, o.stage,
                                         item_fields(dataset, items)))[1])
        if reference is None:
            mu, sigma = real.stats()
            reference = {"mu": mu, "sigma": sigma}
            save_entry(path, key, reference)
        mu_fake, sigma_fake = fake.stats()
        return {"fid": frechet_distance(mu_fake, sigma_fake, reference["mu"], reference["sigma"]),
                **self.identity()}

"""The judge of the shapes metric: one small multi-head network that reads a scene's five attributes.

Colours are read by fixed rules, shape, size and position by a small CNN (see :class:`ShapesJudge`),
which is trained on real renders of ``train``-split scenes at the evaluated resolution, then
cached on disk, keyed by that resolution, the training spec and the shapes
:data:`~ganstack_defaults.shapes.scenes.SPEC_VERSION`. Every input is first area-averaged (or, below
:data:`JUDGE_SIZE`, repeated) to ``JUDGE_SIZE`` pixels, so training costs the same at any
resolution; the attributes stay legible there (a small shape is about 13 pixels wide).
Training adds Gaussian pixel noise of a random strength so the judge does not depend on the
renders' perfectly flat colours. It is seeded and trains on 2 CPU cores in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from attrs import validators as v
from torch import Tensor, nn

from ganstack.recipe.schema import seed_range
from ganstack_defaults.metrics.cache import cache_file, load_entry, save_entry
from ganstack_defaults.shapes import scenes as shapes

JUDGE_SIZE = 32
JUDGE_VERSION = 1  # bump when the network or its training changes
CLASSES: dict[str, tuple[str, ...]] = {
    "background": shapes.COLORS,
    "color": shapes.COLORS,
    "shape": shapes.SHAPES,
    "size": shapes.SIZES,
    "position": shapes.POSITIONS,
}
GEOMETRY = ("shape", "size", "position")  # read from the foreground map, not from colours
BORDER = 2  # width in pixels of the judge's border ring, which is mostly background
EPS = 1e-6
PIXEL_TEMPERATURE = 0.02  # in squared [-1, 1] units; the closest palette colours are 0.36 apart


@attrs.frozen(kw_only=True)
class JudgeSpec:
    """How the judge is trained; every field is part of its cache key."""

    train_scenes: int = attrs.field(default=3000, validator=v.ge(100))
    steps: int = attrs.field(default=400, validator=v.ge(1))
    batch_size: int = attrs.field(default=64, validator=v.ge(1))
    lr: float = attrs.field(default=3e-3, validator=v.gt(0))
    width: int = attrs.field(default=8, validator=v.ge(1))
    max_noise: float = attrs.field(default=0.15, validator=v.ge(0))
    seed: int = attrs.field(default=0, validator=seed_range)


class ShapesJudge(nn.Module):
    """Images ``[N, 3, r, r]`` in [-1, 1] to one logit vector per attribute.

    Built so that it judges colour pairs it never saw (the ``holdout`` split) exactly as well as
    the others. Each pixel gets a distribution over the palette, ``softmax(-d^2 / T)`` of its
    squared distances ``d^2`` to the palette colours (:data:`PIXEL_TEMPERATURE`; fixed, not
    learnt: the nearest palette colour is the right answer for any pixel). The background is the
    commonest colour of the border ring (a shape in a corner covers at most a sixth of it); the
    shape's colour is the colour of the pixels that are not background, the background's colour
    excluded (the two always differ).
    Shape, size and position are read by a small CNN (the trained part) from that foreground map
    alone, which holds no colour at all.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        w = width
        self.geometry = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1), nn.ReLU(),  # 16
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),  # 8
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.ReLU(),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 64), nn.ReLU(),
            nn.Linear(64, sum(len(CLASSES[a]) for a in GEOMETRY)),
        )
        palette = torch.tensor([shapes.PALETTE[c] for c in shapes.COLORS], dtype=torch.float32) / 127.5 - 1
        self.register_buffer("palette", palette[:, :, None, None], persistent=False)  # [8, 3, 1, 1]
        ring = torch.ones(JUDGE_SIZE, JUDGE_SIZE)
        ring[BORDER:-BORDER, BORDER:-BORDER] = 0
        self.register_buffer("ring", ring / ring.sum(), persistent=False)

    def colours(self, images: Tensor) -> Tensor:
        """Per-pixel palette distribution ``[N, 8, S, S]`` of images at the judge's size."""
        d2 = (images[:, None] - self.palette).square().sum(dim=2)
        return (-d2 / PIXEL_TEMPERATURE).softmax(dim=1)

    def foreground(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The colour reading at the judge's size: per-pixel palette distribution ``[N, 8, S, S]``, the
        border ring's colour distribution ``[N, 8]``, the chosen background (one-hot ``[N, 8]``) and the
        foreground map ``[N, 1, S, S]`` (each pixel's chance of not being the background colour)."""
        colours = self.colours(F.adaptive_avg_pool2d(images.float(), JUDGE_SIZE))
        background = (colours * self.ring).sum(dim=(2, 3))  # [N, 8]
        chosen = F.one_hot(background.argmax(dim=1), len(shapes.COLORS)).to(colours.dtype)
        foreground = 1 - (colours * chosen[:, :, None, None]).sum(dim=1, keepdim=True)
        return colours, background, chosen, foreground

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        colours, background, chosen, foreground = self.foreground(images)
        shape_colour = (colours * foreground).sum(dim=(2, 3)) * (1 - chosen)  # never the background's
        shape_colour = shape_colour / shape_colour.sum(dim=1, keepdim=True).clamp(min=EPS)
        geometry = self.geometry(foreground).split([len(CLASSES[a]) for a in GEOMETRY], dim=1)
        return {"background": background.clamp(min=EPS).log(), "color": shape_colour.clamp(min=EPS).log(),
                **dict(zip(GEOMETRY, geometry, strict=True))}

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
        """Class index per attribute, ``[N]`` each, computed in batches."""
        parts = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return {a: torch.cat([p[a].argmax(1) for p in parts]) for a in CLASSES}


def render_scenes(scenes: Sequence[shapes.Scene], size: int) -> Tensor:
    """Real renders ``[N, 3, size, size]`` in [-1, 1], as the shapes dataset serves them."""
    pixels = np.stack([shapes.render(s, size) for s in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def labels(scenes: Sequence[shapes.Scene]) -> dict[str, Tensor]:
    """Class index per attribute of each scene."""
    return {a: torch.tensor([CLASSES[a].index(s.attributes()[a]) for s in scenes]) for a in CLASSES}


def accuracy(predicted: dict[str, Tensor], truth: dict[str, Tensor]) -> dict[str, float]:
    """Per-attribute accuracy and ``all`` (every attribute right), as fractions."""
    right = {a: predicted[a].cpu() == truth[a] for a in CLASSES}
    result = {a: float(r.float().mean()) for a, r in right.items()}
    result["all"] = float(torch.stack(list(right.values())).all(0).float().mean())
    return result


def colours_swapped(predicted: dict[str, Tensor], truth: dict[str, Tensor]) -> float:
    """Fraction of pictures whose two colours came in each other's roles: the shape in the caption's
    background colour and the background in its shape colour. On the ``holdout`` split that is the
    pair the training captions named, so it tells a model that read which colours were named, but
    recalled their roles from training, from one that drew other colours."""
    color, background = predicted["color"].cpu(), predicted["background"].cpu()
    return float(((color == truth["background"]) & (background == truth["color"])).float().mean())


def train_judge(resolution: int, spec: JudgeSpec, device: torch.device) -> ShapesJudge:
    """Train a judge on real renders of ``train`` scenes at ``resolution``; deterministic on the CPU."""
    scenes = shapes.make_scenes(spec.train_scenes, spec.seed, "train")
    images, truth = render_scenes(scenes, resolution), labels(scenes)
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        judge = ShapesJudge(spec.width)
    judge.to(device).train()
    opt = torch.optim.Adam(judge.parameters(), lr=spec.lr)
    for _ in range(spec.steps):
        idx = torch.randint(len(scenes), (spec.batch_size,), generator=gen)
        strength = torch.rand(spec.batch_size, 1, 1, 1, generator=gen) * spec.max_noise
        noisy = images[idx] + strength * torch.randn(images[idx].shape, generator=gen)
        logits = judge(noisy.to(device))
        loss = sum(F.cross_entropy(logits[a], truth[a][idx].to(device)) for a in GEOMETRY)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return judge.eval()


def judge_key(resolution: int, spec: JudgeSpec) -> dict[str, object]:
    return {"what": "shapes-judge", "version": JUDGE_VERSION, "shapes_spec": shapes.SPEC_VERSION,
            "resolution": resolution, "spec": attrs.asdict(spec)}


def load_or_train_judge(resolution: int, spec: JudgeSpec, cache_dir: Path,
                        device: torch.device) -> ShapesJudge:
    """The cached judge for ``(resolution, spec)``, training and caching it on first use."""
    key = judge_key(resolution, spec)
    path = cache_file(cache_dir, "shapes-judge", key)
    payload = load_entry(path, key)
    if payload is not None:
        judge = ShapesJudge(spec.width)
        judge.load_state_dict(payload["state_dict"])
        return judge.to(device).eval()
    judge = train_judge(resolution, spec, device)
    save_entry(path, key, {"state_dict": {k: t.cpu() for k, t in judge.state_dict().items()}})
    return judge


class Judges:
    """The judges of one metric, one per image resolution, each loaded (or trained) once on first use."""

    def __init__(self, spec: JudgeSpec, cache_dir: Path, device: torch.device) -> None:
        self.spec, self.cache_dir, self.device = spec, cache_dir, device
        self._by_resolution: dict[int, ShapesJudge] = {}

    def __call__(self, resolution: int) -> ShapesJudge:
        if resolution not in self._by_resolution:
            self._by_resolution[resolution] = load_or_train_judge(resolution, self.spec, self.cache_dir, self.device)
        return self._by_resolution[resolution]

"""Inception-v3 as TensorFlow computes it: the network layout behind the literature's FID and IS.

torchvision's ``Inception3`` has the module and parameter names of TensorFlow's Inception-v3 but
pools differently in the pool branch of its Mixed blocks. A TensorFlow ``avg_pool`` with
``SAME`` padding averages only the pixels inside the image (PyTorch: ``count_include_pad=False``),
where torchvision counts the zero padding. Two networks of the literature are built here:

- ``pytorch-fid``: the 2015-12-05 ImageNet graph that TensorFlow's FID code (and OpenAI's
  Inception Score code) load, as pytorch-fid ported it to a state dict
  (``pt_inception-2015-12-05-6726825d.pth``): 1008 classes, no auxiliary head, the TF average
  pool in Mixed_5b-5d, 6b-6e and 7b, and a 3x3 *max* pool (stride 1, padding 1) in the pool
  branch of Mixed_7c, as that graph has it.
- ``stackgan-inception``: the TF-slim Inception-v3 that StackGAN fine-tuned on CUB
  (``inception_finetuned_models/birds_valid299``): the TF average pool in every Mixed block
  (7c included) and as many classes as the converted file's ``fc`` has.

Both keep torchvision's parameter names, so a state dict of either has exactly the keys of a
torchvision ``Inception3`` without ``AuxLogits``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

Pool = Literal["avg", "max"]


def tf_pool(x: Tensor, kind: Pool = "avg") -> Tensor:
    """The 3x3, stride-1, SAME-padded pool of TensorFlow: padding never enters an average."""
    if kind == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TFInceptionA(InceptionA):
    """Mixed_5b-5d with TensorFlow's average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        return [self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(tf_pool(x))]


class TFInceptionC(InceptionC):
    """Mixed_6b-6e with TensorFlow's average pool."""

    def _forward(self, x: Tensor) -> list[Tensor]:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return [self.branch1x1(x), b7, d7, self.branch_pool(tf_pool(x))]


class TFInceptionE(InceptionE):
    """Mixed_7b/7c with TensorFlow's pool of the given kind (``max`` in the 2015 graph's 7c)."""

    def __init__(self, in_channels: int, pool: Pool = "avg") -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: Tensor) -> list[Tensor]:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d3 = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1)
        return [self.branch1x1(x), b3, d3, self.branch_pool(tf_pool(x, self.pool))]


def tf_inception_v3(num_classes: int, last_pool: Pool) -> Inception3:
    """torchvision's Inception-v3 (no auxiliary head, untouched input) with TensorFlow's Mixed blocks.

    ``last_pool`` is the pool of Mixed_7c's pool branch: ``max`` for the ``pytorch-fid`` network,
    ``avg`` for the TF-slim model (``stackgan-inception``).
    """
    net = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False)
    net.Mixed_5b = TFInceptionA(192, pool_features=32)
    net.Mixed_5c = TFInceptionA(256, pool_features=64)
    net.Mixed_5d = TFInceptionA(288, pool_features=64)
    for name, width in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        setattr(net, name, TFInceptionC(768, channels_7x7=width))
    net.Mixed_7b = TFInceptionE(1280, pool="avg")
    net.Mixed_7c = TFInceptionE(2048, pool=last_pool)
    return net


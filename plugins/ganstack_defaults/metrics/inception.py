"""The Inception-v3 judge of the Inception Score and FID: a weights file the user points to.

Nothing is downloaded. ``weights`` is a torchvision-layout ``Inception3`` state dict (the
ImageNet one torchvision publishes, or a fine-tuned one such as a CUB model converted to that
layout); the number of classes and whether it has the auxiliary head are read from the file.

Preprocessing (:data:`PREPROCESSING`, part of every cache key) is fixed:

1. clamp images to [-1, 1];
2. resize to 299x299 with ``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False, antialias=False)``, in float32;
3. feed the result to the network built with ``transform_input=False``.

Step 3 is exactly torchvision's ``transform_input=True`` semantics: that option maps
ImageNet-normalised input ``(p - mean) / std`` (``p`` in [0, 1]) to ``(p - 0.5) / 0.5``, which is
the [-1, 1] scale our images already have, so we skip the round trip through ImageNet
normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstack.errors import UserError
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack.run_folder.checkpoint import load_failure

INPUT_SIZE = 299
PREPROCESSING = "clamp[-1,1]>bilinear299(align_corners=False,antialias=False)>transform_input-scale"

# The seam the metrics take: (weights file, device) -> module mapping images in [-1, 1] at any size
# to (logits [N, classes], pool features [N, D]). Tests pass a tiny network here.
BackboneLoader = Callable[[Path, torch.device], nn.Module]


def preprocess(images: Tensor) -> Tensor:
    """Images ``[N, 3, r, r]`` in [-1, 1] to the network's ``[N, 3, 299, 299]`` input (see module doc)."""
    x = images.float().clamp(-1, 1)
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                         antialias=False)


class InceptionBackbone(nn.Module):
    """Inception-v3 returning class logits and the 2048-d pool3 features from one pass."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.fc = net.fc
        net.fc = nn.Identity()  # the net now ends at pool3 (dropout is inactive in eval mode)
        self.net = net
        self.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pool = self.net(preprocess(images))
        return self.fc(pool), pool


def _weights_error(path: Path, problem: str) -> UserError:
    return UserError(
        f"the Inception weights {path} {problem}", path="weights",
        fix="set the metric's `weights` option to a torchvision Inception-v3 state dict saved with "
        "torch.save(model.state_dict(), FILE) (nothing is downloaded)")


def check_weights_file(weights: str, recipe_dir: Path | None = None) -> Path:
    """The weights path (a relative one: next to the recipe, then the working folder), or a
    UserError naming the ``weights`` option when it cannot be read."""
    path, candidates = resolve_recipe_path(weights, recipe_dir, Path.is_file)
    if not path.exists():
        raise _weights_error(Path(weights), f"do not exist (looked for {looked_in(candidates)})")
    if not path.is_file():
        raise _weights_error(path, "are not a file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise _weights_error(path, f"cannot be read ({exc.strerror})") from exc
    return path


def load_inception(weights: Path, device: torch.device) -> nn.Module:
    """Build torchvision's Inception-v3 to match the state dict in ``weights`` and load it."""
    from torchvision.models import inception_v3  # torchvision is slow to import; only when needed

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # every reason is reported; none relays PyTorch's unsafe advice
        raise _weights_error(weights, f"cannot be loaded as a state dict ({load_failure(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("fc.weight"), Tensor):
        raise _weights_error(weights, "are not an Inception-v3 state dict (no 'fc.weight' entry)")
    num_classes = state["fc.weight"].shape[0]
    aux = any(k.startswith("AuxLogits.") for k in state)
    net = inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=num_classes,
                       transform_input=False)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise _weights_error(weights, f"do not fit torchvision's Inception-v3: {exc}") from exc
    return InceptionBackbone(net).to(device)

"""The Inception-v3 judges of the Inception Score and FID: named networks, weights files you point to.

Nothing is downloaded. A metric's ``network`` option names one of :data:`NETWORKS`; its
``weights`` option is a state dict file of that network, checked key by key and shape by shape
before it is used. Each network fixes how images in [-1, 1] reach it (its ``preprocessing``,
part of every cache key and recorded with the score):

- ``torchvision`` (the default, ganstack's original judge): a torchvision ``Inception3`` state
  dict (ImageNet's, or a fine-tuned one in that layout; classes and auxiliary head read from
  the file). Images are clamped to [-1, 1] and resized to 299x299 by
  ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` in float32, then fed
  to the network built with ``transform_input=False`` -- exactly torchvision's
  ``transform_input=True`` semantics, whose output scale is [-1, 1].
- ``pytorch-fid``: pytorch-fid's port of the 2015-12-05 TensorFlow graph
  (``pt_inception-2015-12-05-6726825d.pth``), the network of the published PyTorch FIDs. Images
  are quantised to 8 bits as a saved PNG holds them (``round((x + 1) * 127.5)``), read as
  ``q / 255`` in [0, 1], resized to 299x299 by the same bilinear interpolation as above (what
  pytorch-fid's ``resize_input`` does), then scaled by ``2 * x - 1`` (its ``normalize_input``).
  FID uses the 2048-d pool3 features; the Inception Score uses ``pool3 @ fc.weight.T`` without
  the bias, as OpenAI's Inception Score code multiplies pool3 by the softmax weights only.
- ``stackgan-inception``: StackGAN's Inception-v3 fine-tuned on CUB (a TF-slim checkpoint),
  converted to a state dict by ``ganstack import stackgan-inception``. Its evaluation script
  resizes each 8-bit image with ``scipy.misc.imresize(..., interp='bilinear')`` (PIL's bilinear
  filter, antialiased when shrinking) back to 8 bits, then scales by ``x / 127.5 - 1``; here the
  image is quantised as above, resized by ``F.interpolate(mode="bilinear", antialias=True)``
  (torch's port of PIL's filter), rounded to 8 bits and scaled the same way. Its logit 0 is the
  background class of the TF-slim training code and is dropped before the softmax, as the
  script does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganstack.errors import UserError
from ganstack.recipe.paths import looked_in, resolve_recipe_path
from ganstack.run_folder.checkpoint import load_failure

INPUT_SIZE = 299
PUBLISHED_FID_SHA256_PREFIX = "6726825d"  # the hash part of pytorch-fid's file name (torch.hub's convention)

# The seam the metrics take: (weights file, device) -> module mapping images in [-1, 1] at any size
# to (class logits [N, classes], pool features [N, D]). Tests pass a tiny network here.
BackboneLoader = Callable[[Path, torch.device], nn.Module]


def preprocess(images: Tensor) -> Tensor:
    """``torchvision``: images ``[N, 3, r, r]`` in [-1, 1] to the network's ``[N, 3, 299, 299]`` input."""
    x = images.float().clamp(-1, 1)
    return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                         antialias=False)


def to_8bit(images: Tensor) -> Tensor:
    """Images in [-1, 1] as the 0..255 integer levels a saved PNG holds (as float32)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round()


def preprocess_pytorch_fid(images: Tensor) -> Tensor:
    """``pytorch-fid``: 8-bit levels read as [0, 1], bilinear to 299, then ``2x - 1``."""
    x = to_8bit(images) / 255
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                      antialias=False)
    return 2 * x - 1


def preprocess_stackgan(images: Tensor) -> Tensor:
    """``stackgan-inception``: 8-bit levels, PIL-style bilinear to 299 rounded to 8 bits, ``x/127.5 - 1``."""
    x = F.interpolate(to_8bit(images), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                      align_corners=False, antialias=True)
    return x.round().clamp(0, 255) / 127.5 - 1


@attrs.frozen
class InceptionNetwork:
    """One named judge: how to build it for a state dict, feed it, and read its classes."""

    name: str
    build: Callable[[dict[str, Tensor]], nn.Module]  # the network fitting a (checked) state dict
    preprocess: Callable[[Tensor], Tensor]
    preprocessing: str  # names the preprocessing in cache keys
    logits_bias: bool = True  # False: class logits are pool @ W.T (OpenAI's IS code)
    drop_background: bool = False  # True: logit 0 is a background class, dropped before softmax
    weights_doc: str = ""  # what file the ``weights`` option wants, for error messages


def _classes(state: dict[str, Tensor]) -> int:
    return int(state["fc.weight"].shape[0])


def _build_torchvision(state: dict[str, Tensor]) -> nn.Module:
    from torchvision.models import inception_v3  # torchvision is slow to import; only when needed

    aux = any(k.startswith("AuxLogits.") for k in state)
    return inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=_classes(state),
                        transform_input=False)


def _build_pytorch_fid(state: dict[str, Tensor]) -> nn.Module:
    from ganstack_defaults.metrics.tf_inception import tf_inception_v3

    return tf_inception_v3(num_classes=1008, last_pool="max")


def _build_stackgan(state: dict[str, Tensor]) -> nn.Module:
    from ganstack_defaults.metrics.tf_inception import tf_inception_v3

    return tf_inception_v3(num_classes=_classes(state), last_pool="avg")


NETWORKS: dict[str, InceptionNetwork] = {
    "torchvision": InceptionNetwork(
        "torchvision", _build_torchvision, preprocess,
        "clamp[-1,1]>bilinear299(align_corners=False,antialias=False)>transform_input-scale",
        weights_doc="a torchvision Inception-v3 state dict saved with torch.save(model.state_dict(), FILE)"),
    "pytorch-fid": InceptionNetwork(
        "pytorch-fid", _build_pytorch_fid, preprocess_pytorch_fid,
        "uint8>/255>bilinear299(align_corners=False,antialias=False)>2x-1", logits_bias=False,
        weights_doc="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (a state dict of its "
        "FID Inception: 1008 classes, no auxiliary head)"),
    "stackgan-inception": InceptionNetwork(
        "stackgan-inception", _build_stackgan, preprocess_stackgan,
        "uint8>bilinear299(antialias=True)>uint8>/127.5-1", drop_background=True,
        weights_doc="the state dict `ganstack import stackgan-inception` writes from StackGAN's "
        "fine-tuned TF checkpoint (birds_valid299/model.ckpt)"),
}


class InceptionBackbone(nn.Module):
    """An Inception-v3 returning class logits and the 2048-d pool3 features from one pass."""

    def __init__(self, net: nn.Module, network: InceptionNetwork = NETWORKS["torchvision"]) -> None:
        super().__init__()
        self.fc = net.fc
        net.fc = nn.Identity()  # the net now ends at pool3 (dropout is inactive in eval mode)
        self.net = net
        self.network = network
        self.eval()

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pool = self.net(self.network.preprocess(images))
        logits = self.fc(pool) if self.network.logits_bias else pool @ self.fc.weight.T
        return (logits[:, 1:] if self.network.drop_background else logits), pool


def _weights_error(path: Path, problem: str, network: InceptionNetwork = NETWORKS["torchvision"],
                   hint: str = "") -> UserError:
    return UserError(
        f"the Inception weights {path} {problem}{hint}", path="weights",
        fix=f"set the metric's `weights` option to {network.weights_doc}, or set `network` to the "
        f"network the file holds ({', '.join(NETWORKS)}); nothing is downloaded")


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


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _guess(state: dict[str, Tensor], network: InceptionNetwork) -> str:
    """What the file seems to hold instead, for the error message."""
    keys = list(state)
    if any("/" in k for k in keys):
        return " (its keys are TensorFlow variable names: convert the checkpoint with `ganstack import " \
               "stackgan-inception`)"
    if any(k.startswith("blocks.") for k in keys):
        return " (it looks like a state dict of pytorch-fid's InceptionV3 wrapper, which has no fc layer: " \
               "pass pytorch-fid's released pt_inception-2015-12-05-6726825d.pth instead)"
    fc = state.get("fc.weight")
    if network.name == "pytorch-fid" and isinstance(fc, Tensor) and fc.shape[0] != 1008:
        return f" (it has {fc.shape[0]} classes, pytorch-fid's network 1008: it looks like another " \
               f"Inception-v3; network `torchvision` reads torchvision-layout files)"
    if network.name != "torchvision" and any(k.startswith("AuxLogits.") for k in keys):
        return " (it has an auxiliary head, as torchvision's ImageNet file does: network `torchvision` reads it)"
    return ""


def check_state(state: dict[str, Tensor], net: nn.Module, path: Path, network: InceptionNetwork) -> None:
    """Every key and shape of the state dict equals the network's (``num_batches_tracked`` optional)."""
    def relevant(names: Iterable[str]) -> set[str]:
        return {k for k in names if not k.endswith("num_batches_tracked")}

    expected = net.state_dict()
    missing = sorted(relevant(expected) - relevant(state))
    unexpected = sorted(relevant(state) - relevant(expected))
    wrong = sorted(k for k in relevant(expected) & relevant(state)
                   if tuple(state[k].shape) != tuple(expected[k].shape))
    problems = []
    if missing:
        problems.append(f"lack {len(missing)} of its {len(relevant(expected))} entries ({_listed(missing)})")
    if unexpected:
        problems.append(f"have {len(unexpected)} entries it does not ({_listed(unexpected)})")
    if wrong:
        problems.append("differ in shape at " + ", ".join(
            f"'{k}' ({tuple(state[k].shape)}, not {tuple(expected[k].shape)})" for k in wrong[:3]))
    if problems:
        raise _weights_error(path, f"do not fit the `{network.name}` network: they " + "; ".join(problems),
                             network, _guess(state, network))


def load_network(name: str, weights: Path, device: torch.device) -> InceptionBackbone:
    """Build the named network to match the state dict in ``weights``, check it, and load it."""
    network = NETWORKS[name]
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _weights_error(weights, f"cannot be loaded as a state dict ({load_failure(exc)})",
                             network) from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _weights_error(weights, "are not a state dict (a mapping of names to tensors)", network)
    if not isinstance(state.get("fc.weight"), Tensor) or state["fc.weight"].ndim != 2:
        raise _weights_error(weights, "are not an Inception-v3 state dict (no 2-d 'fc.weight' entry)", network,
                             _guess(state, network))
    net = network.build(state)
    check_state(state, net, weights, network)
    net.load_state_dict(state, strict=False)  # checked above; only num_batches_tracked may be absent
    return InceptionBackbone(net, network).to(device)


def load_inception(weights: Path, device: torch.device) -> nn.Module:
    """The ``torchvision`` network (ganstack's original judge) for ``weights``."""
    return load_network("torchvision", weights, device)


def network_loader(name: str) -> BackboneLoader:
    """The :data:`BackboneLoader` of a named network."""
    return lambda weights, device: load_network(name, weights, device)

"""``ganstack import stackgan-inception``: StackGAN's CUB Inception-v3 (a TF checkpoint) as a state dict.

StackGAN's Inception Score on CUB uses an Inception-v3 fine-tuned on CUB's 50 test classes with
TensorFlow's ``inception`` library (its ``slim`` package), released as
``inception_finetuned_models/birds_valid299/model.ckpt``. This importer maps its variables to the
keys of the ``stackgan-inception`` network (torchvision's names), as docs/metrics.md tabulates:

- ``conv0``-``conv4`` -> ``Conv2d_1a_3x3``, ``Conv2d_2a_3x3``, ``Conv2d_2b_3x3``, ``Conv2d_3b_1x1``,
  ``Conv2d_4a_3x3``; ``mixed_35x35x256a``, ``mixed_35x35x288a``, ``mixed_35x35x288b`` ->
  ``Mixed_5b``-``5d``; ``mixed_17x17x768a``-``e`` -> ``Mixed_6a``-``6e``; ``mixed_17x17x1280a`` ->
  ``Mixed_7a``; ``mixed_8x8x2048a``/``b`` -> ``Mixed_7b``/``7c``; ``logits/logits`` -> ``fc``.
- Within a block, a branch scope's convolutions are ``Conv``, ``Conv_1``, ... in the order the
  TF code creates them, i.e. torchvision's ``_1``, ``_2``, ... (Mixed_7b/7c's ``branch3x3/Conv_1``
  and ``Conv_2`` are ``branch3x3_2a`` (1x3) and ``branch3x3_2b`` (3x1)).
- Per convolution ``S``: ``S/weights`` ``[kh, kw, in, out]`` -> ``S'.conv.weight`` permuted to
  ``[out, in, kh, kw]``; ``S/BatchNorm/beta`` -> ``.bn.bias``; ``S/BatchNorm/moving_mean`` and
  ``moving_variance`` -> ``.bn.running_mean`` and ``.bn.running_var``; ``.bn.weight`` is 1 (the
  library's batch norm has no ``gamma``; one is used where present). ``logits/logits/weights``
  ``[2048, 51]`` is transposed to ``fc.weight``, ``logits/logits/biases`` is ``fc.bias``.
- StackGAN's evaluation script restores each variable's ``ExponentialMovingAverage`` copy (decay
  0.9999); so does this importer where the checkpoint has one (``--raw-variables``: the plain ones).

Reading a TF checkpoint needs TensorFlow (``pip install tensorflow-cpu``), for this command only:
the state dict it writes loads with torch alone. Without TensorFlow here, export the variables
elsewhere with the two lines docs/metrics.md gives and import the ``.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import attrs
import numpy as np
import torch

from ganstack.atomic import write_bytes_atomic
from ganstack.errors import UserError
from ganstack.interfaces import ImportContext

EMA_SUFFIX = "/ExponentialMovingAverage"

# (TF block scope, torchvision block, [(TF branch scope, [torchvision conv names in creation order])])
_A = [("branch1x1", ["branch1x1"]), ("branch5x5", ["branch5x5_1", "branch5x5_2"]),
      ("branch3x3dbl", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]), ("branch_pool", ["branch_pool"])]
_B = [("branch3x3", ["branch3x3"]), ("branch3x3dbl", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"])]
_C = [("branch1x1", ["branch1x1"]), ("branch7x7", ["branch7x7_1", "branch7x7_2", "branch7x7_3"]),
      ("branch7x7dbl", [f"branch7x7dbl_{i}" for i in range(1, 6)]), ("branch_pool", ["branch_pool"])]
_D = [("branch3x3", ["branch3x3_1", "branch3x3_2"]), ("branch7x7x3", [f"branch7x7x3_{i}" for i in range(1, 5)])]
_E = [("branch1x1", ["branch1x1"]), ("branch3x3", ["branch3x3_1", "branch3x3_2a", "branch3x3_2b"]),
      ("branch3x3dbl", ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b"]),
      ("branch_pool", ["branch_pool"])]
BLOCKS = [("mixed_35x35x256a", "Mixed_5b", _A), ("mixed_35x35x288a", "Mixed_5c", _A),
          ("mixed_35x35x288b", "Mixed_5d", _A), ("mixed_17x17x768a", "Mixed_6a", _B),
          ("mixed_17x17x768b", "Mixed_6b", _C), ("mixed_17x17x768c", "Mixed_6c", _C),
          ("mixed_17x17x768d", "Mixed_6d", _C), ("mixed_17x17x768e", "Mixed_6e", _C),
          ("mixed_17x17x1280a", "Mixed_7a", _D), ("mixed_8x8x2048a", "Mixed_7b", _E),
          ("mixed_8x8x2048b", "Mixed_7c", _E)]
STEM = [("conv0", "Conv2d_1a_3x3"), ("conv1", "Conv2d_2a_3x3"), ("conv2", "Conv2d_2b_3x3"),
        ("conv3", "Conv2d_3b_1x1"), ("conv4", "Conv2d_4a_3x3")]


def conv_scopes() -> list[tuple[str, str]]:
    """Every convolution as (TF variable scope, torchvision module name)."""
    pairs = list(STEM)
    for tf_block, tv_block, branches in BLOCKS:
        for branch, names in branches:
            for i, name in enumerate(names):
                pairs.append((f"{tf_block}/{branch}/{'Conv' if i == 0 else f'Conv_{i}'}", f"{tv_block}.{name}"))
    return pairs


@attrs.define(frozen=True, kw_only=True)
class StackGANInceptionOptions:
    """Options of ``ganstack import stackgan-inception``.

    ``source``: StackGAN's TF checkpoint (its prefix, e.g. ``birds_valid299/model.ckpt``; reading it
    needs TensorFlow) or an ``.npz`` of its variables (docs/metrics.md shows the export);
    ``out``: the state dict to write, the metric's ``weights`` with ``network: stackgan-inception``;
    ``raw_variables``: take the plain variables rather than their ``ExponentialMovingAverage``
    copies (which StackGAN's evaluation restores)
    """

    source: str = attrs.field(metadata={"positional": True, "doc": "StackGAN's TF checkpoint (the prefix, e.g. "
                              "birds_valid299/model.ckpt; needs TensorFlow) or an .npz of its variables"})
    out: str = attrs.field(metadata={"doc": "the state dict to write (the metric's `weights` with "
                           "network: stackgan-inception)"})
    raw_variables: bool = attrs.field(default=False, metadata={
        "doc": "take the plain variables, not their ExponentialMovingAverage copies (which StackGAN's "
        "evaluation restores)"})


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path} as an .npz of TF variables ({exc})", path="SOURCE",
                        fix="export it with np.savez(FILE, **{name: reader.get_tensor(name) ...}) as "
                        "docs/metrics.md shows") from None


def _read_tf_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    try:
        import tensorflow as tf  # only this command needs it
    except ImportError:
        raise UserError("reading a TensorFlow checkpoint needs TensorFlow, which is not installed", path="SOURCE",
                        fix="pip install tensorflow-cpu for this one conversion, or export the variables to an "
                        ".npz where TensorFlow is (docs/metrics.md) and import that") from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}
    except Exception as exc:  # TF raises its own error types for unreadable checkpoints
        raise UserError(f"TensorFlow cannot read the checkpoint {prefix} ({type(exc).__name__}: {exc})",
                        path="SOURCE", fix="pass the checkpoint's prefix (model.ckpt, beside model.ckpt.index "
                        "or as the single V1 file)") from None


def convert(variables: Mapping[str, np.ndarray], use_averages: bool = True) -> tuple[dict[str, torch.Tensor], int]:
    """The ``stackgan-inception`` state dict of a checkpoint's variables, and how many averages it used."""
    anchors = [k for k in variables if k.endswith("conv0/weights")]
    if not anchors:
        raise UserError("the checkpoint has no 'conv0/weights' variable: it is not the TF inception library's "
                        "Inception-v3", path="SOURCE",
                        fix="pass StackGAN's inception_finetuned_models/birds_valid299/model.ckpt")
    prefix = min(anchors, key=len)[: -len("conv0/weights")]
    averaged = 0

    def get(name: str, required: bool = True) -> np.ndarray | None:
        nonlocal averaged
        full = prefix + name
        if use_averages and full + EMA_SUFFIX in variables:
            averaged += 1
            return variables[full + EMA_SUFFIX]
        if full in variables:
            return variables[full]
        if required:
            raise UserError(f"the checkpoint lacks the variable '{full}'", path="SOURCE",
                            fix="pass StackGAN's fine-tuned Inception-v3 checkpoint (docs/metrics.md lists "
                            "the variables it maps)")
        return None

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    for scope, module in conv_scopes():
        weights = get(f"{scope}/weights")
        assert weights is not None
        if weights.ndim != 4:
            raise UserError(f"'{prefix}{scope}/weights' has shape {weights.shape}, not [kh, kw, in, out]",
                            path="SOURCE", fix="pass StackGAN's fine-tuned Inception-v3 checkpoint")
        state[f"{module}.conv.weight"] = tensor(weights.transpose(3, 2, 0, 1))
        beta = get(f"{scope}/BatchNorm/beta")
        gamma = get(f"{scope}/BatchNorm/gamma", required=False)
        state[f"{module}.bn.weight"] = tensor(np.ones_like(beta) if gamma is None else gamma)
        state[f"{module}.bn.bias"] = tensor(beta)
        state[f"{module}.bn.running_mean"] = tensor(get(f"{scope}/BatchNorm/moving_mean"))
        state[f"{module}.bn.running_var"] = tensor(get(f"{scope}/BatchNorm/moving_variance"))
    fc = get("logits/logits/weights")
    assert fc is not None
    state["fc.weight"] = tensor(np.asarray(fc).T)
    state["fc.bias"] = tensor(get("logits/logits/biases"))
    return state, averaged


def import_stackgan_inception(options: StackGANInceptionOptions, ctx: ImportContext) -> None:
    """StackGAN's CUB-fine-tuned Inception-v3 (TF checkpoint or .npz of it) -> a state dict for the IS."""
    from ganstack_defaults.metrics.inception import NETWORKS, check_state

    source, out = Path(options.source), Path(options.out)
    if source.suffix == ".npz":
        if not source.is_file():
            raise UserError(f"{source} does not exist", path="SOURCE", fix="pass the .npz of the variables")
        variables = _read_npz(source)
    else:
        variables = _read_tf_checkpoint(source)
    state, averaged = convert(variables, use_averages=not options.raw_variables)
    network = NETWORKS["stackgan-inception"]
    check_state(state, network.build(state), source, network)  # the shapes fit the network
    try:
        write_bytes_atomic(out, lambda fh: torch.save(state, fh))
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}", path="--out",
                        fix="choose a writable path") from None
    convs = len(conv_scopes())
    ctx.report(f"wrote {out}: {convs} convolutions and the {state['fc.weight'].shape[0]}-way classifier "
               f"(class 0 is the background, dropped when scoring); {averaged} variables from their moving "
               f"averages. Score with: network: stackgan-inception, weights: {out}")

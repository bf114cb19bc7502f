"""Read a Reed char-CNN-RNN out of its Torch7 file: find the nngraph ``gModule``, read its layers and
tell the recurrent layer's linear maps apart by where they sit in the graph.

The encoder (icml2016's ``HybridCNNLong`` or cvpr2016's ``HybridCNN``) is a graph
``Identity -> Sequential(CNN) -> SplitTable -> gModule(FixedGRU or FixedRNN) -> Dropout -> Linear``.
The recurrent gModule repeats each linear layer once per step, with shared weights, so its
layers cannot be named by position: an input-to-hidden map reads a step's input, a
hidden-to-hidden one a hidden state; a map whose sum goes through a sigmoid is a gate, the reset
gate being the one multiplied into the hidden state before a linear layer; a sum through tanh
(GRU) or ReLU (RNN) is the candidate. Nothing is assumed about the order of ``modules`` (nngraph
fills it by a topological sort).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ganstack_defaults.text.reed import (
    ALPHABET,
    MAX_LENGTH,
    ConvLayer,
    Layer,
    MaxPoolLayer,
    ReedArchitecture,
    ThresholdLayer,
)
from ganstack_defaults.text.torch7 import LuaTable, Tensor, Torch7Error, TorchObject

_ACTIVATIONS = ("Tanh", "ReLU", "Threshold", "Sigmoid")


class NotReedEncoder(ValueError):
    """The file is readable Torch7 but not an encoder this importer knows; the message says why."""


def find_encoder(obj: Any) -> tuple[TorchObject, str]:
    """The text encoder in a loaded file: ``protos.enc_doc`` when there is one, else the top object."""
    protos = _field(obj, "protos")
    if protos is not None:
        encoder = _field(protos, "enc_doc")
        if not _is(encoder, "gModule"):
            names = sorted(str(k) for k in _fields(protos))
            raise NotReedEncoder(f"the file's 'protos' holds no text encoder 'enc_doc' (it holds: "
                                 f"{', '.join(names) or 'nothing'})")
        return encoder, "protos.enc_doc"
    if _is(obj, "gModule"):
        return obj, "the file's top object"
    what = obj.typename if isinstance(obj, TorchObject) else type(obj).__name__
    raise NotReedEncoder(f"the file holds a {what}, not an nngraph gModule nor a table with protos.enc_doc")


def read_reed(obj: Any) -> tuple[ReedArchitecture, dict[str, np.ndarray], str]:
    """The encoder in a loaded ``.t7`` file: its architecture, its weights and where it was found."""
    encoder, place = find_encoder(obj)
    architecture, tensors = read_encoder(encoder, _field(obj, "opt"))
    return architecture, tensors, place


def read_encoder(encoder: TorchObject, options: Any = None) -> tuple[ReedArchitecture, dict[str, np.ndarray]]:
    """The architecture and weights (named as :class:`ReedArchitecture` wants) of an encoder gModule.

    ``options``: the file's ``opt`` table, if any (its ``doc_length`` overrides 201 characters).
    """
    chain = _flatten(_chain(encoder))
    split = next((i for i, m in enumerate(chain) if _short(m) == "SplitTable"), None)
    if split is None:
        raise NotReedEncoder("the graph has no SplitTable between a CNN and a recurrent layer: "
                             f"its modules are {', '.join(_short(m) for m in chain)}")
    layers, tensors = _cnn(chain[:split])
    rest = [m for m in chain[split + 1:] if _short(m) not in ("Dropout", "Identity")]
    if len(rest) != 2 or not _is(rest[0], "gModule") or _short(rest[1]) != "Linear":
        raise NotReedEncoder("after the CNN the graph should be a recurrent gModule, then Dropout and "
                             f"Linear; it is {', '.join(_short(m) for m in chain[split + 1:])}")
    rnn, steps, average, rnn_tensors = _recurrent(rest[0])
    tensors.update(rnn_tensors)
    out_weight, out_bias = _linear(rest[1])
    tensors["out.weight"], tensors["out.bias"] = out_weight, out_bias
    length = _field(options, "doc_length")
    architecture = ReedArchitecture(
        alphabet=ALPHABET, max_length=int(length) if isinstance(length, float) else MAX_LENGTH,
        layers=tuple(layers), rnn=rnn, hidden=int(tensors["i2h.weight"].shape[0]), steps=steps,
        average=average, dim=int(out_weight.shape[0]))
    first = next(layer for layer in layers if isinstance(layer, ConvLayer))
    if first.in_channels != len(ALPHABET):
        raise NotReedEncoder(f"the first convolution reads {first.in_channels} symbols per character; Reed's "
                             f"alphabet has {len(ALPHABET)}")
    try:
        architecture.check()
    except ValueError as exc:
        raise NotReedEncoder(str(exc)) from None
    return architecture, tensors


# ------------------------------------------------------------------------------ Torch7 objects
def _fields(obj: Any) -> dict[Any, Any]:
    if isinstance(obj, TorchObject):
        return obj.fields if isinstance(obj.fields, dict) else {}
    return obj if isinstance(obj, LuaTable) else {}


def _field(obj: Any, key: str) -> Any:
    return _fields(obj).get(key)


def _short(module: Any) -> str:
    """``nn.Linear`` -> ``Linear`` (``cudnn.Tanh`` -> ``Tanh``)."""
    return module.typename.rsplit(".", 1)[-1] if isinstance(module, TorchObject) else type(module).__name__


def _is(obj: Any, short: str) -> bool:
    return isinstance(obj, TorchObject) and _short(obj) == short


def _number(module: TorchObject, key: str) -> float:
    value = _field(module, key)
    if not isinstance(value, float):
        raise NotReedEncoder(f"its {module.typename} has no number '{key}'")
    return value


def _array(module: TorchObject, key: str) -> np.ndarray:
    value = _field(module, key)
    if not isinstance(value, Tensor):
        raise NotReedEncoder(f"its {module.typename} has no tensor '{key}'")
    try:
        return value.numpy().astype(np.float32)
    except Torch7Error as exc:
        raise NotReedEncoder(f"its {module.typename}'s '{key}': {exc}") from None


def _linear(module: TorchObject) -> tuple[np.ndarray, np.ndarray]:
    weight, bias = _array(module, "weight"), _array(module, "bias")
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise NotReedEncoder(f"a Linear with weight {weight.shape} and bias {bias.shape}")
    return weight, bias


def _unwrap(module: Any) -> Any:
    """A Sequential of one module is that module (FixedGRU wraps each Linear so)."""
    while _is(module, "Sequential") and len(_modules(module)) == 1:
        module = _modules(module)[0]
    return module


def _modules(container: TorchObject) -> list[Any]:
    modules = _field(container, "modules")
    return modules.sequence() if isinstance(modules, LuaTable) else []


def _flatten(modules: list[Any]) -> list[Any]:
    out: list[Any] = []
    for m in modules:
        out += _flatten(_modules(m)) if _is(m, "Sequential") else [m]
    return out


# ------------------------------------------------------------------------------ nngraph graphs
def _node_data(gmodule: TorchObject) -> list[LuaTable]:
    nodes = _field(gmodule, "forwardnodes")
    if not isinstance(nodes, LuaTable) or not nodes.sequence():
        raise NotReedEncoder("its gModule has no forward nodes")
    datas = [_field(node, "data") for node in nodes.sequence()]
    if not all(isinstance(d, LuaTable) for d in datas):
        raise NotReedEncoder("a node of its gModule has no data table")
    return datas


def _inputs(data: LuaTable) -> list[LuaTable]:
    """The node's inputs in order (``mapindex[1..n]``)."""
    mapindex = data.get("mapindex")
    return [d for d in mapindex.sequence() if isinstance(d, LuaTable)] if isinstance(mapindex, LuaTable) else []


def _output_data(gmodule: TorchObject) -> LuaTable:
    outnode_data = _field(_field(gmodule, "outnode"), "data")
    outputs = _inputs(outnode_data) if isinstance(outnode_data, LuaTable) else []
    if len(outputs) != 1:
        raise NotReedEncoder(f"its gModule has {len(outputs)} outputs; an encoder has one")
    return outputs[0]


def _input_data(gmodule: TorchObject) -> LuaTable | None:
    """The data of the graph's input node (older nngraph lists its *readers* in its ``mapindex``)."""
    data = _field(_field(gmodule, "innode"), "data")
    return data if isinstance(data, LuaTable) else None


def _chain(gmodule: TorchObject) -> list[Any]:
    """The modules from the graph's input to its output, when the graph is one chain."""
    modules: list[Any] = []
    innode = _input_data(gmodule)
    data: LuaTable | None = _output_data(gmodule)
    seen: set[int] = set()
    while data is not None and data is not innode:
        if id(data) in seen:
            raise NotReedEncoder("its outer graph has a cycle")
        seen.add(id(data))
        if data.get("module") is not None:
            modules.append(data["module"])
        inputs = _inputs(data)
        if len(inputs) > 1:
            raise NotReedEncoder("its outer graph branches; Reed's encoder is one chain of layers")
        data = inputs[0] if inputs else None
    return modules[::-1]


def _cnn(modules: list[Any]) -> tuple[list[Layer], dict[str, np.ndarray]]:
    layers: list[Layer] = []
    tensors: dict[str, np.ndarray] = {}
    for m in modules:
        kind = _short(m)
        if kind in ("Identity", "Dropout"):
            continue
        if kind == "TemporalConvolution":
            n_in, n_out, width = (int(_number(m, k)) for k in ("inputFrameSize", "outputFrameSize", "kW"))
            weight, bias = _linear(m)
            if weight.shape != (n_out, width * n_in):
                raise NotReedEncoder(f"a TemporalConvolution({n_in}, {n_out}, {width}) has weight {weight.shape}")
            i = sum(isinstance(layer, ConvLayer) for layer in layers)
            # Torch7 concatenates the kW input frames: column k * in + c is frame k, channel c.
            tensors[f"conv{i}.weight"] = weight.reshape(n_out, width, n_in).transpose(0, 2, 1).copy()
            tensors[f"conv{i}.bias"] = bias
            stride = _field(m, "dW")
            layers.append(ConvLayer(in_channels=n_in, out_channels=n_out, width=width,
                                    stride=int(stride) if isinstance(stride, float) else 1))
        elif kind in ("Threshold", "ReLU"):
            threshold, value = _field(m, "threshold"), _field(m, "val")
            layers.append(ThresholdLayer(threshold=threshold if isinstance(threshold, float) else 0.0,
                                         value=value if isinstance(value, float) else 0.0))
        elif kind == "TemporalMaxPooling":
            layers.append(MaxPoolLayer(width=int(_number(m, "kW")), stride=int(_number(m, "dW"))))
        else:
            raise NotReedEncoder(f"its CNN has a {m.typename}, which Reed's char-CNN has not")
    if not tensors:
        raise NotReedEncoder("its CNN has no TemporalConvolution")
    return layers, tensors


def _step_input(data: LuaTable, innode: LuaTable | None) -> bool:
    """Whether ``data`` passes a step's input on unchanged (split nodes, Identity, the input node)."""
    for _ in range(64):  # Identity and split nodes only: a short way back to the input
        if data is innode or data.get("selectindex") is not None:
            return True
        module = data.get("module")
        if module is not None and _short(_unwrap(module)) != "Identity":
            return False
        inputs = _inputs(data)
        if not inputs:
            return True
        if len(inputs) != 1:
            return False
        data = inputs[0]
    return False


def _recurrent(gmodule: TorchObject) -> tuple[str, int, bool, dict[str, np.ndarray]]:
    """``(rnn, steps, average, tensors)`` of a FixedGRU or FixedRNN gModule."""
    datas = _node_data(gmodule)
    innode = _input_data(gmodule)
    users: dict[LuaTable, list[LuaTable]] = {d: [] for d in datas}
    for d in datas:
        if d is not innode:  # older nngraph lists the input node's readers as its mapindex
            for source in _inputs(d):
                users.setdefault(source, []).append(d)

    def kind(d: LuaTable) -> str | None:
        module = d.get("module")
        return _short(_unwrap(module)) if module is not None else None

    roles: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    step_one: list[str] = []  # the activation after step 1's input map (no gates there)
    candidates: set[str] = set()  # the activations of the later steps' candidate sums
    for d in datas:
        if kind(d) != "Linear":
            continue
        weights = _linear(_unwrap(d["module"]))
        inputs, after = _inputs(d), users.get(d, [])
        if len(inputs) != 1 or len(after) != 1:
            raise NotReedEncoder("a linear layer of the recurrent graph has several inputs or users")
        from_step = _step_input(inputs[0], innode)
        user = after[0]
        if kind(user) in _ACTIVATIONS and from_step:  # step 1: h1 = act(i2h(x1)), no gates
            step_one.append(_activation(user))
            roles.setdefault("i2h", []).append(weights)
            continue
        sums = users.get(user, [])
        if kind(user) != "CAddTable" or len(sums) != 1 or kind(sums[0]) not in _ACTIVATIONS:
            raise NotReedEncoder("a linear layer of the recurrent graph is neither FixedGRU's nor FixedRNN's")
        activation = _activation(sums[0])
        if activation == "sigmoid":
            resets = any(kind(c) == "CMulTable" and any(kind(u) == "Linear" for u in users.get(c, []))
                         for c in users.get(sums[0], []))
            suffix = "_reset" if resets else "_update"
        elif activation in ("tanh", "relu"):
            suffix = ""
            candidates.add(activation)
        else:
            raise NotReedEncoder(f"a recurrent sum goes through a {activation}")
        roles.setdefault(("i2h" if from_step else "h2h") + suffix, []).append(weights)
    steps = _steps(gmodule, datas, innode)
    if steps < 2:
        raise NotReedEncoder(f"its recurrent layer runs over {steps} step; this importer reads 2 or more")
    rnn = {"tanh": "gru", "relu": "rnn"}.get(step_one[0]) if len(step_one) == 1 else None
    if rnn is None or candidates != {step_one[0]}:
        found = ", ".join(sorted({*step_one, *candidates})) or "none"
        raise NotReedEncoder(f"its recurrent layer's activations ({found}) are neither FixedGRU's (tanh) "
                             "nor FixedRNN's (ReLU), one for step 1 and the same for the later steps")
    wanted = {"i2h": steps, "h2h": steps - 1}
    if rnn == "gru":
        wanted |= {"i2h_update": steps - 1, "h2h_update": steps - 1, "i2h_reset": steps - 1, "h2h_reset": steps - 1}
    tensors: dict[str, np.ndarray] = {}
    for role, count in wanted.items():
        found = roles.pop(role, [])
        if len(found) != count:
            raise NotReedEncoder(f"its {rnn.upper()} over {steps} steps has {len(found)} '{role}' linear layers, "
                                 f"not {count}")
        weight, bias = found[0]
        if any(not (np.array_equal(w, weight) and np.array_equal(b, bias)) for w, b in found[1:]):
            raise NotReedEncoder(f"the '{role}' layers of its recurrent layer do not share their weights")
        tensors[f"{role}.weight"], tensors[f"{role}.bias"] = weight, bias
    if roles:
        raise NotReedEncoder(f"its recurrent layer has unexpected linear layers ({', '.join(sorted(roles))})")
    return rnn, steps, _averages(gmodule, steps), tensors


def _activation(data: LuaTable) -> str:
    module = _unwrap(data["module"])
    kind = _short(module)
    if kind == "Threshold":
        if (_field(module, "threshold"), _field(module, "val")) != (0.0, 0.0):
            raise NotReedEncoder("a Threshold other than ReLU inside the recurrent layer")
        return "relu"
    return kind.lower()


def _steps(gmodule: TorchObject, datas: list[LuaTable], innode: LuaTable | None) -> int:
    """The gModule's inputs: ``nInputs``, or (older nngraph) its Identity nodes fed by the input."""
    n = _field(gmodule, "nInputs")
    if isinstance(n, float):
        return int(n)
    return sum(_is(d.get("module"), "Identity") and _step_input(d, innode) for d in datas)


def _averages(gmodule: TorchObject, steps: int) -> bool:
    """Whether the output is the mean of the hidden states (a final ``MulConstant(1/steps)``)."""
    output = _output_data(gmodule)
    module = output.get("module")
    if not _is(module, "MulConstant"):
        return False
    scale = _number(module, "constant_scalar")
    if not np.isclose(scale, 1.0 / steps):
        raise NotReedEncoder(f"its recurrent layer's output is scaled by {scale}, not 1/{steps}")
    return True

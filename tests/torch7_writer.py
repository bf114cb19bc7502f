"""Tests only: write Torch7's binary serialisation (what ``torch.save`` in Lua writes), and build Reed's
char-CNN-RNN encoders as nngraph writes them, at any size, to test the importer on real-format files.

Written from the format (torch7's File.lua: type tags, reference indices for tables and Torch
objects, ``"V 1"`` class headers, tensors as sizes/strides/1-based offset plus a storage) and from
nngraph's structures (``nngraph.Node`` with a ``data`` table holding ``module``, ``mapindex``,
``selectindex``; ``gModule`` with ``modules``, ``forwardnodes``, ``innode``, ``outnode``). Parameters
can live in one flat storage, as after ``getParameters()``, and steps share weights as ``share`` does.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5


class Table:
    """A Lua table with keys of any kind (tables too), kept in insertion order."""

    def __init__(self, items: dict[Any, Any] | list[Any] | None = None) -> None:
        self.pairs: list[tuple[Any, Any]] = []
        if isinstance(items, list):
            self.pairs = [(i + 1, v) for i, v in enumerate(items)]
        elif items:
            self.pairs = list(items.items())

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pairs.append((key, value))

    def get(self, key: Any) -> Any:
        return next((v for k, v in self.pairs if k is key or (isinstance(k, str) and k == key)), None)


class Obj:
    """An instance of a Torch class: its name and its fields."""

    def __init__(self, typename: str, **fields: Any) -> None:
        self.typename = typename
        self.fields = Table(fields)


class Storage:
    def __init__(self, data: np.ndarray, typename: str = "torch.FloatStorage") -> None:
        self.data = np.ascontiguousarray(data).ravel()
        self.typename = typename


class View:
    """A tensor viewing ``storage`` from element ``offset`` (0-based) with the given shape and strides."""

    def __init__(self, storage: Storage, offset: int, shape: tuple[int, ...],
                 stride: tuple[int, ...] | None = None, typename: str = "torch.FloatTensor") -> None:
        self.storage, self.offset, self.shape, self.typename = storage, offset, tuple(shape), typename
        self.stride = stride or tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))


class Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.index: dict[int, int] = {}
        self.keep: list[Any] = []  # objects indexed by id() stay alive

    def _int(self, v: int) -> None:
        self.out += struct.pack("<i", v)

    def _long(self, v: int) -> None:
        self.out += struct.pack("<q", v)

    def _string(self, s: str) -> None:
        data = s.encode("utf-8")
        self._int(len(data))
        self.out += data

    def _reference(self, obj: Any) -> bool:
        """Write the object's index; True when it was written before (only the index is needed)."""
        if id(obj) in self.index:
            self._int(self.index[id(obj)])
            return True
        self.index[id(obj)] = len(self.index) + 1
        self.keep.append(obj)
        self._int(self.index[id(obj)])
        return False

    def _header(self, typename: str) -> None:
        self._string("V 1")
        self._string(typename)

    def write(self, obj: Any) -> None:
        if obj is None:
            self._int(NIL)
        elif isinstance(obj, bool):
            self._int(BOOLEAN)
            self._int(int(obj))
        elif isinstance(obj, (int, float)):
            self._int(NUMBER)
            self.out += struct.pack("<d", float(obj))
        elif isinstance(obj, str):
            self._int(STRING)
            self._string(obj)
        elif isinstance(obj, np.ndarray):
            self.write(View(Storage(obj.astype(np.float32)), 0, obj.shape))
        elif isinstance(obj, (Obj, Storage, View)):
            self._int(TORCH)
            if self._reference(obj):
                return
            self._header(obj.typename)
            if isinstance(obj, Storage):
                self._long(len(obj.data))
                self.out += obj.data.astype("<f4" if obj.data.dtype == np.float32 else obj.data.dtype).tobytes()
            elif isinstance(obj, View):
                self._int(len(obj.shape))
                for n in obj.shape:
                    self._long(n)
                for s in obj.stride:
                    self._long(s)
                self._long(obj.offset + 1)
                self.write(obj.storage)
            else:
                self.write(obj.fields)
        else:
            table = obj if isinstance(obj, Table) else Table(obj)
            self._int(TABLE)
            if self._reference(obj):
                return
            self._int(len(table.pairs))
            for k, v in table.pairs:
                self.write(k)
                self.write(v)


def save_t7(obj: Any, path: Path) -> Path:
    writer = Writer()
    writer.write(obj)
    path.write_bytes(bytes(writer.out))
    return path


# ------------------------------------------------------------------------------ nngraph
class Node:
    """A node while the graph is built: its module (or none) and its inputs, in order."""

    def __init__(self, module: Obj | None, inputs: list[Node], **data: Any) -> None:
        self.module, self.inputs = module, inputs
        self.data = Table({"module": module, **data} if module is not None else data)


def call(module: Obj, *inputs: Node) -> Node:
    """``module(inputs)`` in nngraph's notation."""
    return Node(module, list(inputs))


def gmodule(inputs: list[Node], outputs: list[Node], legacy: bool = False) -> Obj:
    """An ``nn.gModule`` with nngraph's fields: input/split/output nodes, nodes in topological order.

    ``legacy``: as nngraph wrote it before gModule became a Container: no ``modules`` nor ``nInputs``,
    no split nodes (every input reads the input node, whose ``mapindex`` lists its readers)."""
    innode = Node(None, [], input=Table())
    if legacy:
        for node in inputs:
            node.inputs = [innode]
    elif len(inputs) == 1:
        inputs[0].inputs = [innode]
    else:
        innode.data["nSplitOutputs"] = len(inputs)
        for i, node in enumerate(inputs):
            node.inputs = [Node(None, [innode], selectindex=i + 1, input=Table())]
    outnode = Node(None, list(outputs), input=Table())
    order: list[Node] = []

    def visit(node: Node) -> None:
        if node not in order:
            for source in node.inputs:
                visit(source)
            order.append(node)

    visit(outnode)
    forward: dict[int, Obj] = {}
    for i, node in enumerate(order):
        mapindex = Table()
        for k, source in enumerate(node.inputs):
            mapindex[k + 1] = source.data
            mapindex[source.data] = k + 1
        node.data["mapindex"] = mapindex
        node.data["reverseMap"] = Table()
        node.data["annotations"] = Table({"_debugLabel": f"[test]:{i}"})
        node.data["forwardNodeId"] = i + 1
        forward[id(node)] = Obj("nngraph.Node", data=node.data, children=Table(), visited=False, marked=False,
                                id=i + 1)
    for node in order:  # forward children: the nodes reading this one
        for source in node.inputs:
            children = forward[id(source)].fields.get("children")
            children[len([k for k, _ in children.pairs if isinstance(k, int)]) + 1] = forward[id(node)]
    if legacy:
        readers = Table()
        for k, node in enumerate(inputs):
            readers[k + 1] = node.data
            readers[node.data] = k + 1
        innode.data.pairs = [(k, v) for k, v in innode.data.pairs if k != "mapindex"] + [("mapindex", readers)]
    nodes = [forward[id(n)] for n in order]
    backward = [Obj("nngraph.Node", data=n.data, children=Table(), visited=False, marked=False, id=i + 1)
                for i, n in enumerate(reversed(order))]
    edges = [Obj("graph.Edge", **{"from": forward[id(s)], "to": forward[id(n)]}) for n in order for s in n.inputs]
    fields = dict(forwardnodes=nodes, backwardnodes=backward, fg=Obj("graph.Graph", nodes=nodes, edges=edges),
                  innode=forward[id(innode)], outnode=forward[id(outnode)], verbose=False, gradInput=Table())
    if not legacy:
        fields |= dict(modules=[n.module for n in order if n.module is not None], nInputs=len(inputs), train=False)
    return Obj("nn.gModule", **fields)


# ------------------------------------------------------------------------------ nn modules
class Params:
    """Parameters drawn from one generator into one flat storage, as ``getParameters()`` leaves them."""

    def __init__(self, seed: int, scale: float = 0.3, typename: str = "torch.FloatTensor") -> None:
        self.rng = np.random.default_rng(seed)
        self.scale = scale
        self.values: list[np.ndarray] = []
        self.views: list[View] = []
        self.storage = Storage(np.zeros(0, np.float32), typename.replace("Tensor", "Storage"))
        self.typename = typename

    def tensor(self, *shape: int) -> View:
        value = (self.rng.standard_normal(shape) * self.scale).astype(np.float32)
        offset = sum(v.size for v in self.values)
        self.values.append(value)
        view = View(self.storage, offset, shape, typename=self.typename)
        self.views.append(view)
        return view

    def finish(self) -> None:
        self.storage.data = np.concatenate([v.ravel() for v in self.values]) if self.values else np.zeros(0)

    def value(self, view: View) -> np.ndarray:
        return self.values[self.views.index(view)]


def empty(typename: str = "torch.FloatTensor") -> View:
    return View(Storage(np.zeros(0, np.float32)), 0, (0,), typename=typename)


def linear(p: Params, n_in: int, n_out: int) -> Obj:
    return Obj("nn.Linear", weight=p.tensor(n_out, n_in), bias=p.tensor(n_out), gradWeight=empty(p.typename),
               gradBias=empty(p.typename), output=empty(p.typename), gradInput=empty(p.typename), train=False)


def shared(module: Obj) -> Obj:
    """A second Linear viewing the same weight and bias (``share(..., 'weight', 'bias')``)."""
    w, b = module.fields.get("weight"), module.fields.get("bias")
    return Obj("nn.Linear", weight=View(w.storage, w.offset, w.shape, w.stride, w.typename),
               bias=View(b.storage, b.offset, b.shape, b.stride, b.typename), train=False)


def sequential(*modules: Obj) -> Obj:
    return Obj("nn.Sequential", modules=list(modules), output=empty(), gradInput=empty(), train=False)


def simple(name: str, **fields: Any) -> Obj:
    return Obj(name, **{"output": empty(), "gradInput": empty(), "train": False, **fields})


def fixed_gru(p: Params, steps: int, dim: int, average: bool, prefix: str = "nn",
              legacy: bool = False) -> tuple[Obj, dict[str, Obj]]:
    """icml2016's FixedGRU.rnn(steps, avg, dim) and its first Linear of each role."""
    inputs = [call(simple("nn.Identity")) for _ in range(steps)]
    first = {role: linear(p, dim, dim) for role in ("i2h_update", "i2h_reset", "i2h")}
    first |= {role: linear(p, dim, dim) for role in ("h2h_update", "h2h_reset", "h2h")}

    def use(role: str, t: int) -> Obj:
        return sequential(first[role] if (t == 1 and role.startswith("i2h")) or (t == 2 and role.startswith("h2h"))
                          else shared(first[role]))

    hids = [call(simple(f"{prefix}.Tanh"), call(use("i2h", 1), inputs[0]))]
    for t in range(2, steps + 1):
        x, h = inputs[t - 1], hids[-1]
        update = call(simple(f"{prefix}.Sigmoid"), call(simple("nn.CAddTable"), call(use("i2h_update", t), x),
                                                          call(use("h2h_update", t), h)))
        reset = call(simple(f"{prefix}.Sigmoid"), call(simple("nn.CAddTable"), call(use("i2h_reset", t), x),
                                                         call(use("h2h_reset", t), h)))
        gated = call(simple("nn.CMulTable"), reset, h)
        candidate = call(simple(f"{prefix}.Tanh"), call(simple("nn.CAddTable"), call(use("i2h", t), x),
                                                          call(use("h2h", t), gated)))
        zh = call(simple("nn.CMulTable"), update, candidate)
        one_minus = call(simple("nn.AddConstant", constant_scalar=1.0, inplace=False),
                         call(simple("nn.MulConstant", constant_scalar=-1.0, inplace=False), update))
        hids.append(call(simple("nn.CAddTable"), zh, call(simple("nn.CMulTable"), one_minus, h)))
    out = hids[-1]
    if average:
        out = hids[0]
        for h in hids[1:]:
            out = call(simple("nn.CAddTable"), out, h)
        out = call(simple("nn.MulConstant", constant_scalar=1.0 / steps, inplace=False), out)
    return gmodule(inputs, [out], legacy), first


def fixed_rnn(p: Params, steps: int, dim: int, legacy: bool = False) -> tuple[Obj, dict[str, Obj]]:
    """cvpr2016's FixedRNN.rnn(steps, avg, dim): ReLU steps, always the mean."""
    inputs = [call(simple("nn.Identity")) for _ in range(steps)]
    first = {"i2h": linear(p, dim, dim), "h2h": linear(p, dim, dim)}
    relus = [call(simple("nn.ReLU", threshold=0.0, val=0.0, inplace=False),
                  call(sequential(first["i2h"]), inputs[0]))]
    total = relus[0]
    for t in range(2, steps + 1):
        h2h = first["h2h"] if t == 2 else shared(first["h2h"])
        relus.append(call(simple("nn.ReLU", threshold=0.0, val=0.0, inplace=False),
                          call(simple("nn.CAddTable"), call(sequential(shared(first["i2h"])), inputs[t - 1]),
                               call(sequential(h2h), relus[-1]))))
        total = call(simple("nn.CAddTable"), total, relus[-1])
    out = call(simple("nn.MulConstant", constant_scalar=1.0 / steps, inplace=False), total)
    return gmodule(inputs, [out], legacy), first


def temporal_conv(p: Params, n_in: int, n_out: int, width: int) -> Obj:
    return Obj("nn.TemporalConvolution", inputFrameSize=n_in, outputFrameSize=n_out, kW=width, dW=1,
               weight=p.tensor(n_out, width * n_in), bias=p.tensor(n_out), gradWeight=empty(), gradBias=empty(),
               output=empty(), gradInput=empty(), train=False)


def reed_encoder(p: Params, *, channels: tuple[int, int, int], dim: int, variant: str = "gru18",
                 prefix: str = "nn", legacy: bool = False, average: bool = True) -> tuple[Obj, dict[str, Any]]:
    """HybridCNNLong + FixedGRU ("gru18", 18 steps, mean) or HybridCNN + FixedRNN ("rnn8", 8 steps), with
    the tensors the test computes from: ``convs`` [(weight, bias)], ``rnn`` {role: (w, b)}, ``out``.
    ``prefix``: ``cudnn`` for cudnn.convert's activations; ``legacy``: older nngraph's gModules;
    ``average``: FixedGRU's avg (0: the last hidden state)."""
    c1, c2, c3 = channels
    convs = [temporal_conv(p, 70, c1, 4), temporal_conv(p, c1, c2, 4), temporal_conv(p, c2, c3, 4)]
    layers = [convs[0], simple("nn.Threshold", threshold=1e-6, val=0.0, inplace=False),
              simple("nn.TemporalMaxPooling", kW=3, dW=3, indices=empty()),
              convs[1], simple("nn.Threshold", threshold=1e-6, val=0.0, inplace=False),
              simple("nn.TemporalMaxPooling", kW=3, dW=3, indices=empty()),
              convs[2], simple("nn.Threshold", threshold=1e-6, val=0.0, inplace=False)]
    if variant == "gru18":
        rnn, first = fixed_gru(p, 18, c3, average=average, prefix=prefix, legacy=legacy)
    else:
        layers.append(simple("nn.TemporalMaxPooling", kW=3, dW=2, indices=empty()))
        rnn, first = fixed_rnn(p, 8, c3, legacy=legacy)
    out = linear(p, c3, dim)
    x = call(simple("nn.Identity"))
    h = call(simple("nn.SplitTable", dimension=2), call(sequential(*layers), x))
    y = call(out, call(simple("nn.Dropout", p=0.0, v2=True, noise=empty()), call(rnn, h)))
    p.finish()

    def pair(m: Obj) -> tuple[np.ndarray, np.ndarray]:
        return p.value(m.fields.get("weight")), p.value(m.fields.get("bias"))

    truth = {"convs": [pair(c) for c in convs], "rnn": {role: pair(m) for role, m in first.items()},
             "out": pair(out), "variant": variant, "average": average}
    return gmodule([x], [y], legacy), truth

"""Read ncnn model files: the text ``.param`` graph and the ``.bin`` weight stream.

Formats as implemented by ncnn itself (``src/net.cpp``, ``src/paramdict.cpp``,
``src/modelbin.cpp``, ``src/layer/convolution.cpp``, ``src/layer/prelu.cpp``):

``.param`` (text)::

    7767517                                   magic
    <layer_count> <blob_count>
    <type> <name> <n_in> <n_out> <in blobs...> <out blobs...> <id>=<value> ...

A value holding ``.`` or ``e``/``E`` is a float, otherwise an int. An id ``<= -23300`` is an
array: its real id is ``-id - 23300`` and its value is ``<n>,<v1>,...,<vn>``.

``.bin``: each layer with weights reads its blobs in layer order, nothing in between. A blob
loaded with *type 0* (e.g. convolution weights) starts with a 4-byte tag:

* ``0x01306B47`` - fp16 payload, ``align4(n * 2)`` bytes,
* ``0x000D4B38`` - int8 payload, ``align4(n)`` bytes,
* ``0x0002C056`` - fp32 payload (``n * 4`` bytes),
* any other non-zero tag (sum of its bytes != 0) - a 256-entry fp32 table followed by
  ``align4(n)`` uint8 indices into it,
* ``0`` - fp32 payload.

A blob loaded with *type 1* (biases, PReLU slopes) is raw fp32 with no tag.

Only the layers that Real-ESRGAN-style graphs use are understood: weightless
``Input Split Concat Eltwise BinaryOp Interp PixelShuffle Crop Padding ReLU Sigmoid Clip`` and
the weighted ``Convolution`` and ``PReLU``. Any other layer raises :class:`NcnnFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

PARAM_MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32_SCALED = 0x0002C056

#: Layer types that read no weights from the .bin.
WEIGHTLESS = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle",
                        "Crop", "Padding", "ReLU", "Sigmoid", "Clip", "Noop"})

Value = Union[int, float, list]


class NcnnFormatError(ValueError):
    """A .param or .bin file that this reader cannot understand; the message says where."""


@dataclass
class NcnnLayer:
    """One layer line of a .param file.

    ``params`` maps the numeric id to an int, a float, or a list (array params, id already
    turned back from ``-23300 - id``).
    """

    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Value] = field(default_factory=dict)

    def get(self, pid: int, default: Value | None = None) -> Value | None:
        return self.params.get(pid, default)


@dataclass
class NcnnGraph:
    """A parsed .param file: layers in file order and the declared blob count."""

    layers: list[NcnnLayer]
    blob_count: int

    def of_type(self, type_name: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == type_name]

    @property
    def input_blob(self) -> str:
        """Name of the blob written by the (first) Input layer."""
        for layer in self.layers:
            if layer.type == "Input":
                return layer.outputs[0]
        raise NcnnFormatError("the .param file has no Input layer")

    @property
    def output_blob(self) -> str:
        """Name of the last layer's (first) output blob."""
        return self.layers[-1].outputs[0]


def _is_float(text: str) -> bool:
    """ncnn's ``vstr_is_float``: a value with '.' or 'e'/'E' is a float."""
    return "." in text or "e" in text.lower()


def _value(text: str) -> int | float:
    return float(text) if _is_float(text) else int(text)


def parse_param(text: str, where: str = "<param>") -> NcnnGraph:
    """Parse the text of an ncnn .param file (see the module docstring for the format)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != str(PARAM_MAGIC):
        raise NcnnFormatError(f"{where}: first line must be the magic {PARAM_MAGIC}, "
                              f"got {lines[0]!r}" if lines else f"{where}: empty file")
    try:
        layer_count, blob_count = (int(x) for x in lines[1].split())
    except ValueError:
        raise NcnnFormatError(f"{where}, line 2: expected '<layer_count> <blob_count>', got {lines[1]!r}") from None
    layers = []
    for lineno, line in enumerate(lines[2:], start=3):
        tok = line.split()
        try:
            ltype, name, n_in, n_out = tok[0], tok[1], int(tok[2]), int(tok[3])
            ins = tok[4:4 + n_in]
            outs = tok[4 + n_in:4 + n_in + n_out]
            if len(ins) != n_in or len(outs) != n_out:
                raise ValueError("too few blob names")
        except (IndexError, ValueError) as e:
            raise NcnnFormatError(f"{where}, line {lineno}: bad layer line ({e}): {line[:80]!r}") from None
        params: dict[int, Value] = {}
        for kv in tok[4 + n_in + n_out:]:
            key, sep, val = kv.partition("=")
            try:
                pid = int(key)
                if not sep:
                    raise ValueError("missing '='")
                if pid <= -23300:
                    pid = -pid - 23300
                    count, *items = val.split(",")
                    if int(count) != len(items):
                        raise ValueError(f"array says {count} items, has {len(items)}")
                    params[pid] = [_value(v) for v in items]
                else:
                    params[pid] = _value(val)
            except ValueError as e:
                raise NcnnFormatError(f"{where}, line {lineno}, layer {name!r}: bad param {kv!r} ({e})") from None
        layers.append(NcnnLayer(ltype, name, ins, outs, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{where}: header says {layer_count} layers, found {len(layers)}")
    return NcnnGraph(layers, blob_count)


def load_param(path: str | Path) -> NcnnGraph:
    """Parse an ncnn .param file from disk."""
    return parse_param(Path(path).read_text(encoding="ascii"), where=str(path))


def _align4(n: int) -> int:
    return (n + 3) & ~3


class _Reader:
    """Sequential reads of ModelBin blobs from a bytes buffer."""

    def __init__(self, data: bytes, where: str):
        self.data = memoryview(data)
        self.pos = 0
        self.where = where

    def take(self, nbytes: int, what: str) -> memoryview:
        if self.pos + nbytes > len(self.data):
            raise NcnnFormatError(f"{self.where}: file ends at byte {len(self.data)} while reading {what} "
                                  f"({nbytes} bytes from offset {self.pos})")
        out = self.data[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out

    def load(self, count: int, load_type: int, what: str) -> np.ndarray:
        """ncnn ``ModelBin::load(w=count, type)``: a 1-D array of ``count`` values.

        Returns float32, except int8 payloads which come back as int8 (they need scales).
        """
        if load_type == 1:
            return np.frombuffer(self.take(count * 4, what), dtype="<f4").astype(np.float32)
        if load_type != 0:
            raise NcnnFormatError(f"{self.where}: {what}: load type {load_type} is not defined by ncnn")
        raw = bytes(self.take(4, f"{what} tag"))
        tag = int.from_bytes(raw, "little")
        if tag == TAG_FP16:
            buf = self.take(_align4(count * 2), f"{what} fp16 payload")
            return np.frombuffer(buf, dtype="<f2", count=count).astype(np.float32)
        if tag == TAG_INT8:
            buf = self.take(_align4(count), f"{what} int8 payload")
            return np.frombuffer(buf, dtype=np.int8, count=count).copy()
        if tag == TAG_FP32_SCALED:
            return np.frombuffer(self.take(count * 4, f"{what} fp32 payload"), dtype="<f4").astype(np.float32)
        if sum(raw) != 0:
            table = np.frombuffer(self.take(256 * 4, f"{what} quantization table"), dtype="<f4")
            index = np.frombuffer(self.take(_align4(count), f"{what} quantized indices"), dtype=np.uint8, count=count)
            return table[index].astype(np.float32)
        return np.frombuffer(self.take(count * 4, f"{what} fp32 payload"), dtype="<f4").astype(np.float32)


def read_weights(graph: NcnnGraph, data: bytes, where: str = "<bin>") -> dict[str, list[np.ndarray]]:
    """Read a .bin buffer against its parsed graph: layer name -> its weight blobs, 1-D arrays.

    ``Convolution`` gives ``[weight (weight_data_size,), bias (num_output,)]`` (bias only when
    ``5=1``); ``PReLU`` gives ``[slope (num_slope,)]``. The whole buffer must be consumed.
    """
    r = _Reader(data, where)
    out: dict[str, list[np.ndarray]] = {}
    for layer in graph.layers:
        what = f"layer {layer.name!r} ({layer.type})"
        if layer.type in WEIGHTLESS:
            continue
        if layer.type == "Convolution":
            num_output = int(layer.get(0, 0))
            wsize = int(layer.get(6, 0))
            if layer.get(8, 0) or layer.get(19, 0):
                raise NcnnFormatError(f"{where}: {what}: int8-quantized or dynamic-weight convolutions "
                                      "are not supported")
            blobs = [r.load(wsize, 0, f"{what} weight")]
            if blobs[0].dtype == np.int8:
                raise NcnnFormatError(f"{where}: {what}: int8 weights are not supported")
            if layer.get(5, 0):
                blobs.append(r.load(num_output, 1, f"{what} bias"))
            out[layer.name] = blobs
        elif layer.type == "PReLU":
            out[layer.name] = [r.load(int(layer.get(0, 0)), 1, f"{what} slope")]
        else:
            raise NcnnFormatError(f"{where}: {what}: layer type not supported by this reader; supported: "
                                  f"Convolution, PReLU and the weightless {', '.join(sorted(WEIGHTLESS))}")
    if r.pos != len(r.data):
        raise NcnnFormatError(f"{where}: {len(r.data) - r.pos} bytes left over after the last layer: "
                              "the .bin does not belong to this .param")
    return out


def load_model(param_path: str | Path, bin_path: str | Path) -> tuple[NcnnGraph, dict[str, list[np.ndarray]]]:
    """Parse ``param_path`` and read ``bin_path`` against it."""
    graph = load_param(param_path)
    return graph, read_weights(graph, Path(bin_path).read_bytes(), where=str(bin_path))


def conv_weight_shape(layer: NcnnLayer) -> tuple[int, int, int, int]:
    """(out, in, kh, kw) of a Convolution layer from its params (ncnn stores OIHW like torch)."""
    num_output = int(layer.get(0, 0))
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    wsize = int(layer.get(6, 0))
    if num_output <= 0 or kw <= 0 or wsize % (num_output * kh * kw):
        raise NcnnFormatError(f"layer {layer.name!r}: weight_data_size {wsize} does not divide into "
                              f"{num_output} outputs of {kh}x{kw} kernels")
    return num_output, wsize // (num_output * kh * kw), kh, kw

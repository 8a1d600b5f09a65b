"""``export``: encode the finished image as PNG, JPEG or WebP with reproducible metadata and a safe name.

The file carries the job (recipe, prompt, seed, model, config hash, overrides, full config) as
A1111-style ``parameters`` text plus zitflow's JSON (see :mod:`zitflow.metadata`), so any
exported image can be traced and re-made. Its name comes from a template (see
:mod:`zitflow.naming`) reduced to ``[A-Za-z0-9._-]``: a prompt can never steer the path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .. import metadata as meta
from ..artifacts import File, Image
from ..colors import check_color
from ..naming import PLACEHOLDERS, TemplateError, check_template, render_name
from ..params import ParamError, param
from ..registry import register
from ..stage import Stage

FORMATS = ("png", "jpeg", "webp")
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
DEFAULT_NAME = "{recipe}_{seed}_{stage}"


class ExportError(ValueError):
    """The image does not match what the export stage was told to expect."""


@dataclass
class ExportParams:
    format: str = param("png", choices=FORMATS, help="png is lossless; jpeg and webp use 'quality'")
    quality: int = param(95, ge=1, le=100, help="JPEG / lossy WebP quality; >= 90 keeps full-resolution JPEG colour (4:4:4)")
    lossless: bool = param(False, help="WebP only: lossless encoding (quality then sets the effort)")
    optimize: bool = param(False, help="smaller files, slower encoding (PNG optimize, JPEG Huffman tables, WebP method 6)")
    name: str = param(DEFAULT_NAME, help="file name template; placeholders: " + ", ".join("{" + k + "}" for k in PLACEHOLDERS))
    width: int = param(0, ge=0, le=65535, help="0 = any; else the image must be exactly this wide")
    height: int = param(0, ge=0, le=65535, help="0 = any; else the image must be exactly this high")
    metadata: bool = param(True, help="embed the job (prompt, seed, recipe, config) in the file")
    background: str = param("white", help="JPEG only: colour under transparent pixels (PIL colour)")
    dpi: int = param(0, ge=0, le=10000, help="0 = none; else the print resolution written into the file "
                                             "(PNG pHYs, JPEG JFIF): 300 makes 2480x3508 print as A4")

    def validate(self) -> None:
        if self.dpi and self.format == "webp":
            raise ParamError("dpi", f"got {self.dpi} with format 'webp', which has no resolution field; "
                                    "allowed: dpi 0 with webp, or format png or jpeg")
        try:
            check_template(self.name)
        except TemplateError as e:
            raise ParamError("name", f"got {self.name!r}; {e}") from None
        check_color("background", self.background)


def check_size(width: int, height: int, params: ExportParams) -> None:
    """:class:`ExportError` when ``params.width`` / ``params.height`` are set and differ from the image."""
    bad_w = params.width and width != params.width
    bad_h = params.height and height != params.height
    if bad_w or bad_h:
        want = f"{params.width or width}x{params.height or height}"
        raise ExportError(
            f"export: the image is {width}x{height} but this stage requires {want} "
            f"(width={params.width}, height={params.height}); put a fit stage before export "
            f"(kind: fit, width: {params.width or width}, height: {params.height or height}) or set width "
            f"and height to 0 to accept any size")


def encode(pil, params: ExportParams, texts: dict | None) -> bytes:
    """Encode PIL image ``pil`` (RGB or RGBA) as ``params.format`` with ``texts`` embedded."""
    from PIL import Image as PILImage
    from PIL import ImageColor

    buf = io.BytesIO()
    if params.format == "png":
        kw = {"optimize": True} if params.optimize else {"compress_level": 6}
        if params.dpi:
            kw["dpi"] = (params.dpi, params.dpi)
        if texts:
            kw["pnginfo"] = meta.png_info(texts)
        pil.save(buf, "PNG", **kw)
    elif params.format == "jpeg":
        if pil.mode == "RGBA":
            bg = PILImage.new("RGBA", pil.size, ImageColor.getrgb(str(params.background))[:3] + (255,))
            pil = PILImage.alpha_composite(bg, pil).convert("RGB")
        kw = {"quality": params.quality, "optimize": params.optimize,
              "subsampling": 0 if params.quality >= 90 else 2}
        if params.dpi:
            kw["dpi"] = (params.dpi, params.dpi)
        if texts:
            kw.update(exif=meta.exif_bytes(texts), xmp=meta.xmp_packet(texts))
        try:
            pil.save(buf, "JPEG", **kw)
        except OSError:
            if not params.optimize:
                raise
            # Pillow gives libjpeg's optimize pass a one-shot buffer of ~1 byte per pixel; a
            # detailed (noise-like) image at quality >= 90 and 4:4:4 needs more and fails with
            # "Suspension not allowed here". Such an image gains little from optimize: save it plain.
            buf = io.BytesIO()
            pil.save(buf, "JPEG", **dict(kw, optimize=False))
    else:
        kw = {"quality": params.quality, "lossless": params.lossless, "method": 6 if params.optimize else 4}
        if texts:
            kw.update(exif=meta.exif_bytes(texts), xmp=meta.xmp_packet(texts))
        pil.save(buf, "WEBP", **kw)
    return buf.getvalue()


def name_values(job: dict, stage: str, width: int, height: int, fmt: str) -> dict:
    """The values of the name placeholders for one export."""
    model = job.get("model")
    return {"recipe": job.get("recipe") or "zitflow", "seed": job.get("seed"), "stage": stage or "export",
            "prompt": job.get("prompt") or "", "config_hash": job.get("config_hash"),
            "model": model.get("name") if isinstance(model, dict) else model,
            "width": width, "height": height, "format": fmt}


@register
class Export(Stage):
    """(H, W, C) image in (uint8, or float rounded to uint8; C = 3 or 4) -> File: the encoded
    bytes and a safe file name ``<template>.png|jpg|webp`` that the job writes into its run dir.

    JPEG has no alpha: transparent pixels are flattened onto ``background``. PNG and WebP keep it.
    """

    kind = "export"
    version = 1
    Params = ExportParams
    inputs = {"image": Image}
    output = File

    def identity(self, params: ExportParams, ctx) -> dict:
        """The job facts (``ctx.job``) the metadata and name are made of: a change re-exports."""
        return {"job": dict(ctx.job or {})}

    def sink(self) -> bool:
        return True

    def run(self, params: ExportParams, inputs, ctx) -> File:
        img = inputs["image"]
        check_size(img.width, img.height, params)
        pil = img.to_pil()
        job = dict(ctx.job or {})
        texts = meta.build(job, img.width, img.height, params.format) if params.metadata else None
        payload = encode(pil, params, texts)
        name = render_name(params.name, name_values(job, ctx.stage_name, img.width, img.height, params.format),
                           EXTENSIONS[params.format])
        ctx.notes["export"] = {"name": name, "bytes": len(payload)}
        return File(payload, name)

"""``fit``: bring an image to exactly WxH by cover (scale and crop), contain (scale and pad) or stretch.

The seeds' ``resize_and_pad`` (Lanczos, white padding, centred) is ``mode=contain``; a crop to a
cover is ``mode=cover`` with ``focus`` choosing which part survives (``top`` keeps the top rows).
The target and mode may come from a ``resolution`` stage's plan (the optional ``size`` input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..artifacts import Data, Image
from ..colors import check_color, parse_color
from ..params import ParamError, param
from ..registry import register
from ..stage import Stage

MODES = ("from_plan", "cover", "contain", "stretch")
FIT_MODES = ("cover", "contain", "stretch")
RESAMPLE = ("lanczos", "bicubic", "bilinear", "box", "nearest")
#: named focus points as (x, y) fractions of the leftover space placed left / above
FOCUS = {
    "center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5),
    "top-left": (0.0, 0.0), "top-right": (1.0, 0.0), "bottom-left": (0.0, 1.0), "bottom-right": (1.0, 1.0),
}
MAX_SIDE = 16384


def parse_focus(text: str) -> tuple[float, float]:
    """``"top"`` -> (0.5, 0.0); ``"0.3,0.2"`` -> (0.3, 0.2). ValueError says what is allowed."""
    key = str(text).strip().lower()
    if key in FOCUS:
        return FOCUS[key]
    parts = key.split(",")
    if len(parts) == 2:
        try:
            fx, fy = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if 0.0 <= fx <= 1.0 and 0.0 <= fy <= 1.0:
                return fx, fy
    raise ValueError(f"one of {', '.join(FOCUS)} or 'x,y' with x and y fractions in [0, 1] "
                     f"(0,0 keeps the top-left, 1,1 the bottom-right)")


@dataclass
class FitGeometry:
    """Where the source goes: ``box`` is the source region (x0, y0, x1, y1) in source pixels that
    is resized to ``size`` (w, h) and pasted at ``offset`` (x, y) on the ``canvas`` (W, H)."""

    mode: str
    canvas: tuple[int, int]
    box: tuple[float, float, float, float]
    size: tuple[int, int]
    offset: tuple[int, int]
    scale_x: float
    scale_y: float

    def describe(self, src: tuple[int, int]) -> str:
        """One line: what happens to a ``src`` (w, h) image, in pixels."""
        sw, sh = src
        W, H = self.canvas
        scale = f"x{self.scale_x:.3f}" if abs(self.scale_x - self.scale_y) < 1e-9 else \
            f"x{self.scale_x:.3f} wide, x{self.scale_y:.3f} high"
        verb = "upscale" if max(self.scale_x, self.scale_y) > 1 + 1e-9 else \
            "keep" if abs(self.scale_x - 1) < 1e-9 and abs(self.scale_y - 1) < 1e-9 else "downscale"
        if self.mode == "cover":
            x0, y0, x1, y1 = self.box
            cut_w, cut_h = sw - (x1 - x0), sh - (y1 - y0)
            crop = f"crop {cut_w:.0f} px of width" if cut_w >= 0.5 else f"crop {cut_h:.0f} px of height" \
                if cut_h >= 0.5 else "no crop"
            return f"cover: {verb} {sw}x{sh} ({scale}), {crop} (source pixels) -> {W}x{H}"
        if self.mode == "contain":
            pw, ph = W - self.size[0], H - self.size[1]
            pad = f"pad {pw} px of width" if pw else f"pad {ph} px of height" if ph else "no padding"
            return f"contain: {verb} {sw}x{sh} to {self.size[0]}x{self.size[1]} ({scale}), {pad} -> {W}x{H}"
        return f"stretch: {sw}x{sh} -> {W}x{H} ({scale}; aspect changes)"


def fit_geometry(src: tuple[int, int], dst: tuple[int, int], mode: str,
                 focus: tuple[float, float] = (0.5, 0.5)) -> FitGeometry:
    """The geometry of fitting a ``src`` (w, h) image into ``dst`` (W, H) pixels.

    cover: scale = max(W/w, H/h); the W/scale x H/scale window of the source at ``focus`` is
    resized straight to WxH (one resampling, sub-pixel box; at scale 1 a whole-pixel crop). contain: scale = min(W/w, H/h);
    the whole source becomes round(w*scale) x round(h*scale) placed at ``focus``
    (``floor(leftover * fraction)``, the seeds' ``//2`` when centred). stretch: WxH, aspect lost.
    """
    sw, sh = int(src[0]), int(src[1])
    W, H = int(dst[0]), int(dst[1])
    fx, fy = focus
    if mode == "cover":
        scale = max(W / sw, H / sh)
        bw, bh = min(sw, W / scale), min(sh, H / scale)
        x0, y0 = (sw - bw) * fx, (sh - bh) * fy
        if scale == 1.0:  # a pure crop: keep whole pixels (floor, as contain places) instead of resampling
            x0, y0 = float(math.floor(x0)), float(math.floor(y0))
        return FitGeometry(mode, (W, H), (x0, y0, x0 + bw, y0 + bh), (W, H), (0, 0), scale, scale)
    if mode == "contain":
        scale = min(W / sw, H / sh)
        nw = min(W, max(1, round(sw * scale)))
        nh = min(H, max(1, round(sh * scale)))
        ox, oy = math.floor((W - nw) * fx), math.floor((H - nh) * fy)
        return FitGeometry(mode, (W, H), (0.0, 0.0, float(sw), float(sh)), (nw, nh), (ox, oy), scale, scale)
    if mode == "stretch":
        return FitGeometry(mode, (W, H), (0.0, 0.0, float(sw), float(sh)), (W, H), (0, 0), W / sw, H / sh)
    raise ValueError(f"fit mode {mode!r}; allowed: {', '.join(FIT_MODES)}")


def _resample(name: str):
    from PIL import Image as PILImage

    return {"lanczos": PILImage.Resampling.LANCZOS, "bicubic": PILImage.Resampling.BICUBIC,
            "bilinear": PILImage.Resampling.BILINEAR, "box": PILImage.Resampling.BOX,
            "nearest": PILImage.Resampling.NEAREST}[name]


def fit_pixels(pixels: np.ndarray, width: int, height: int, mode: str, focus: tuple[float, float] = (0.5, 0.5),
               pad_color: tuple[int, int, int, int] = (255, 255, 255, 255), resample: str = "lanczos") -> np.ndarray:
    """Fit (H, W, C) uint8 pixels (C = 3 or 4) to exactly (height, width, C') uint8.

    C' is C, or 4 when padding with a translucent ``pad_color`` (RGBA) on an RGB image. Alpha
    is resampled premultiplied (PIL), so transparent pixels do not bleed colour.
    """
    from PIL import Image as PILImage

    sh, sw = pixels.shape[:2]
    geo = fit_geometry((sw, sh), (width, height), mode, focus)
    translucent_pad = mode == "contain" and pad_color[3] < 255 and geo.size != (width, height)
    out_mode = "RGBA" if pixels.shape[2] == 4 or translucent_pad else "RGB"
    src = PILImage.fromarray(pixels, "RGBA" if pixels.shape[2] == 4 else "RGB")
    if src.mode != out_mode:
        src = src.convert(out_mode)
    x0, y0, x1, y1 = geo.box
    if geo.size == (sw, sh) and (x0, y0, x1, y1) == (0.0, 0.0, float(sw), float(sh)):
        placed = src
    elif geo.size == (round(x1 - x0), round(y1 - y0)) and all(float(v).is_integer() for v in geo.box):
        placed = src.crop((int(x0), int(y0), int(x1), int(y1)))  # a pure crop: no resampling
    else:
        placed = src.resize(geo.size, _resample(resample), box=geo.box)
    if geo.size == (width, height):
        out = np.asarray(placed)
    else:
        fill = pad_color if out_mode == "RGBA" else pad_color[:3]
        canvas = PILImage.new(out_mode, (width, height), fill)
        canvas.paste(placed, geo.offset)
        out = np.asarray(canvas)
    assert out.shape[:2] == (height, width), (out.shape, width, height)
    return np.ascontiguousarray(out)


@dataclass
class FitParams:
    width: int = param(0, ge=0, le=MAX_SIDE, help="output width in pixels; 0 = target_width of the size input")
    height: int = param(0, ge=0, le=MAX_SIDE, help="output height in pixels; 0 = target_height of the size input")
    mode: str = param("from_plan", choices=MODES,
                      help="cover = scale and crop, contain = scale and pad, stretch = change aspect; "
                           "from_plan = the 'fit' of the size input")
    focus: str = param("center", help=f"what cover keeps / where contain places: {', '.join(FOCUS)} or 'x,y' fractions")
    pad_color: str = param("white", help="contain's padding, any PIL colour: white, #112233, rgba(0,0,0,0)")
    resample: str = param("lanczos", choices=RESAMPLE, help="PIL resampling filter")

    def validate(self) -> None:
        if (self.width == 0) != (self.height == 0):
            raise ParamError("width" if self.width == 0 else "height",
                             f"got width={self.width}, height={self.height}; allowed: both > 0, or both 0 "
                             "to take the target from the size input")
        try:
            parse_focus(self.focus)
        except ValueError as e:
            raise ParamError("focus", f"got {self.focus!r}; allowed: {e}") from None
        check_color("pad_color", self.pad_color,
                    "'white', 'black', '#ffffff', '#00000000' (transparent), 'rgb(255,255,255)'")


def resolve_target(params: FitParams, plan: Mapping[str, Any] | None) -> tuple[int, int, str]:
    """(width, height, mode) from the params, filling zeros and ``from_plan`` from ``plan``."""
    width, height, mode = params.width, params.height, params.mode
    if (width == 0 or mode == "from_plan") and plan is None:
        what = "width/height 0" if width == 0 else "mode 'from_plan'"
        raise ValueError(f"fit: {what} takes the target from a resolution stage, but input 'size' is not "
                         "connected; connect it (inputs: {image: ..., size: <resolution stage>}) or set "
                         "width, height and mode (cover, contain, stretch)")
    if width == 0:
        try:
            width, height = int(plan["target_width"]), int(plan["target_height"])  # type: ignore[index]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"fit: the size input has no target_width/target_height: {dict(plan or {})}") from None
    if mode == "from_plan":
        mode = str((plan or {}).get("fit", ""))
        if mode not in FIT_MODES:
            raise ValueError(f"fit: the size input's 'fit' is {mode!r}; allowed: {', '.join(FIT_MODES)}")
    return width, height, mode


@register
class Fit(Stage):
    """(H, W, C) uint8 image in -> exactly (height, width, C) uint8 out; alpha (C=4) preserved.

    Inputs: ``image`` (Image) and optionally ``size`` (the Data plan of a ``resolution`` stage:
    ``target_width``, ``target_height``, ``fit``). Float images are rounded to uint8 first.
    """

    kind = "fit"
    version = 1
    Params = FitParams
    inputs = {"image": Image, "size": Data}
    optional = frozenset({"size"})
    output = Image

    def run(self, params: FitParams, inputs, ctx) -> Image:
        size = inputs.get("size")
        width, height, mode = resolve_target(params, size.value if size is not None else None)
        img = inputs["image"]
        pixels = img.pixels if img.pixels.dtype == np.uint8 else np.asarray(img.to_pil())
        out = fit_pixels(pixels, width, height, mode, parse_focus(params.focus),
                         parse_color(params.pad_color), params.resample)
        ctx.notes["fit"] = fit_geometry((img.width, img.height), (width, height), mode,
                                        parse_focus(params.focus)).describe((img.width, img.height))
        return Image(out)

"""``load_image``: read an image file (PNG, JPEG, WebP, TIFF, BMP, GIF, ...) as an RGB(A) uint8 Image.

The cache key holds the file's SHA-256, not its path: editing the file re-runs everything
downstream, and moving or renaming it changes nothing. Conversions, so that every later stage
sees (H, W, 3|4) uint8 sRGB:

* EXIF orientation is applied (a phone photo shot in portrait loads upright),
* an embedded ICC profile (Adobe RGB, Display P3, CMYK) is converted to sRGB (``icc``),
* 16-bit images are scaled to 8 bits (65535 -> 255, not clipped); float images in [0, 1]
  are scaled, others clipped to [0, 255],
* palette, grayscale and 1-bit images become RGB; transparency (alpha, a palette's or a
  grayscale image's transparent colour) becomes RGBA, or is flattened on ``background``,
* an animation loads its first frame.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import Image
from ..colors import check_color
from ..params import ParamError, param
from ..registry import register
from ..stage import Stage


class ImageLoadError(ValueError):
    """A path that is missing, not a file, or not an image PIL can decode."""


@dataclass
class LoadImageParams:
    path: str = param(help="image file; a relative path is read from the current directory", semantic=False)
    alpha: str = param("keep", choices=("keep", "flatten"),
                       help="keep transparency as RGBA, or flatten it onto 'background' (RGB)")
    background: str = param("white", help="colour under transparent pixels when alpha=flatten (PIL colour)")
    icc: str = param("convert", choices=("convert", "ignore"),
                     help="convert an embedded ICC profile to sRGB, or ignore it")
    exif_orientation: bool = param(True, help="rotate/flip as the EXIF Orientation tag says")

    def validate(self) -> None:
        if not str(self.path).strip():
            raise ParamError("path", f"got {self.path!r}; allowed: the path of an image file")
        if "\x00" in str(self.path):
            raise ParamError("path", "got a path with a NUL character; allowed: the path of an image file")
        check_color("background", self.background)


def _resolve(path: str) -> Path:
    p = Path(os.path.expanduser(str(path)))
    full = p if p.is_absolute() else Path.cwd() / p
    if not full.exists():
        where = "" if p.is_absolute() else f" (relative paths are read from the current directory {Path.cwd()})"
        raise ImageLoadError(f"load_image: file {str(path)!r} not found: looked for {full}{where}")
    if not full.is_file():
        raise ImageLoadError(f"load_image: {str(path)!r} is not a file ({full}); give the path of an image file")
    return full


def _open(data: bytes, path: str):
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        img = PILImage.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:
        raise ImageLoadError(f"load_image: {path!r} is not an image PIL can read (PNG, JPEG, WebP, TIFF, BMP, "
                             f"GIF, ...); its first bytes are {data[:8]!r}") from None
    except PILImage.DecompressionBombError as e:
        raise ImageLoadError(f"load_image: {path!r} is too large to open safely: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageLoadError(f"load_image: {path!r} is a damaged or truncated image: {e}") from None
    return img


def _to_srgb(img, notes: dict):
    """Convert an embedded ICC profile to sRGB (PIL ImageCms); the image unchanged without one."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return img
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = ImageCms.getProfileDescription(src).strip()
        if "srgb" in desc.lower() and img.mode in ("RGB", "RGBA"):
            return img
        alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
        base = img.convert({"RGBA": "RGB", "LA": "L"}.get(img.mode, img.mode))
        out = ImageCms.profileToProfile(base, src, ImageCms.createProfile("sRGB"), outputMode="RGB",
                                        renderingIntent=ImageCms.Intent.PERCEPTUAL)
        if alpha is not None:
            out.putalpha(alpha)
        notes["icc"] = f"converted from '{desc}' to sRGB"
        return out
    except Exception as e:  # a broken profile: keep the pixels as they are, say so
        notes["icc"] = f"embedded ICC profile not usable ({e}); pixels kept as stored"
        return img


def _high_bit_to_8(img):
    """'I;16*', 'I' (16-bit range) and 'F' modes -> 'L' uint8, scaling instead of clipping."""
    from PIL import Image as PILImage

    a = np.asarray(img)
    if img.mode == "F":
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(a) * scale, 0, 255)
    else:
        out = np.clip(a.astype(np.float64), 0, 65535) / 257.0
    return PILImage.fromarray(np.rint(out).astype(np.uint8), "L")


def to_rgb_pixels(img, alpha: str = "keep", background: str = "white", icc: str = "convert",
                  exif_orientation: bool = True, notes: dict | None = None) -> np.ndarray:
    """Any PIL image -> (H, W, 3|4) uint8 sRGB pixels, as described in the module docstring."""
    from PIL import Image as PILImage
    from PIL import ImageColor, ImageOps

    notes = notes if notes is not None else {}
    if getattr(img, "n_frames", 1) > 1:
        notes["frames"] = f"{img.n_frames} frames; the first is used"
        img.seek(0)
    if exif_orientation:
        orientation = img.getexif().get(0x0112, 1)
        if orientation not in (1, None):
            notes["exif_orientation"] = int(orientation)
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        transparent = img.info.get("transparency")
        img = _high_bit_to_8(img)
        if transparent is not None:
            notes["transparency"] = "16-bit transparent colour dropped"
    if icc == "convert":
        img = _to_srgb(img, notes)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        img = img.convert("RGBA")
        if alpha == "flatten":
            canvas = PILImage.new("RGBA", img.size, ImageColor.getcolor(str(background), "RGBA")[:3] + (255,))
            img = PILImage.alpha_composite(canvas, img).convert("RGB")
    else:
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


@register
class LoadImage(Stage):
    """No inputs -> Image: (H, W, 3) uint8 RGB, or (H, W, 4) RGBA when the file has transparency
    and ``alpha=keep``. The key holds the file's SHA-256 (``identity``), not its path."""

    kind = "load_image"
    version = 1
    Params = LoadImageParams
    output = Image

    def identity(self, params: LoadImageParams, ctx) -> dict:
        """``{"sha256": ...}`` of the file's bytes; missing files and non-images fail here, at plan time."""
        full = _resolve(params.path)
        data = full.read_bytes()
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        try:
            with PILImage.open(io.BytesIO(data)):
                pass
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            _open(data, params.path)  # raises the descriptive ImageLoadError
        return {"sha256": hashlib.sha256(data).hexdigest()}

    def run(self, params: LoadImageParams, inputs, ctx) -> Image:
        data = _resolve(params.path).read_bytes()
        img = _open(data, params.path)
        ctx.notes["source"] = {"format": img.format, "mode": img.mode, "size": list(img.size)}
        pixels = to_rgb_pixels(img, params.alpha, params.background, params.icc, params.exif_orientation, ctx.notes)
        return Image(pixels)

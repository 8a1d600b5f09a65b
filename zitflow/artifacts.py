"""Artifacts: the values that flow between stages, and how each is written to and read from disk.

Each artifact class writes itself into an (empty) entry folder and reads itself back; the
cache store adds the record and checksums around it. Three kinds cover the practice:

* :class:`Image` - pixels as a ``numpy.ndarray`` of shape (H, W, C), C = 3 (RGB) or 4 (RGBA),
  dtype uint8 or float32 in [0, 1], stored raw in a safetensors file (older entries hold
  an ``image.png``, still read). Raw, because encoding is the cost that matters in a cache:
  PNG takes ~0.1 s per megapixel (2 s for a 4096x4096 super-resolved image), a raw write ~1 ms.
* :class:`Tensors` - named ``torch.Tensor`` values (embeddings, latents) plus string metadata,
  stored as one safetensors file.
* :class:`Data` - a small JSON-serialisable mapping (a resolution plan).
* :class:`File` - encoded bytes of a finished asset (PNG / JPEG / WebP) and its suggested name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class Artifact:
    """Base class: ``save(folder) -> list of file names`` and ``load(folder)``."""

    type_name: ClassVar[str]

    def save(self, folder: Path) -> list[str]:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: Path) -> "Artifact":
        raise NotImplementedError


@dataclass
class Image(Artifact):
    """An image: ``pixels`` is (H, W, C) uint8 or float32 in [0, 1]; C is 3 (RGB) or 4 (RGBA)."""

    pixels: np.ndarray
    type_name: ClassVar[str] = "image"

    def __post_init__(self):
        p = self.pixels
        if p.ndim != 3 or p.shape[2] not in (3, 4):
            raise ValueError(f"Image pixels must have shape (H, W, 3|4), got {p.shape}")
        if p.dtype not in (np.uint8, np.float32):
            raise ValueError(f"Image pixels must be uint8 or float32, got {p.dtype}")

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] == 4

    def to_pil(self):
        """A PIL image (uint8; float pixels are rounded)."""
        from PIL import Image as PILImage

        p = self.pixels
        if p.dtype != np.uint8:
            p = np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
        return PILImage.fromarray(p, "RGBA" if p.shape[2] == 4 else "RGB")

    @classmethod
    def from_pil(cls, img) -> "Image":
        """From a PIL image of any mode: kept as RGBA when it has transparency, else RGB."""
        has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
        return cls(np.asarray(img.convert("RGBA" if has_alpha else "RGB")).copy())

    def save(self, folder: Path) -> list[str]:
        from safetensors.numpy import save

        # bytes first, then a Python write: a full disk then raises OSError(ENOSPC), not a Rust error
        (folder / "image.safetensors").write_bytes(save({"pixels": np.ascontiguousarray(self.pixels)}))
        return ["image.safetensors"]

    @classmethod
    def load(cls, folder: Path) -> "Image":
        from PIL import Image as PILImage

        if (folder / "image.png").exists():
            with PILImage.open(folder / "image.png") as img:
                return cls.from_pil(img)
        from safetensors.numpy import load_file

        return cls(load_file(str(folder / "image.safetensors"))["pixels"])


@dataclass
class Tensors(Artifact):
    """Named tensors (e.g. ``prompt_embeds`` of shape (L, D) bf16, ``latents`` (C, H/8, W/8) fp32).

    ``meta`` holds string facts about them (dtype of origin, sizes) and travels in the file.
    """

    tensors: dict[str, Any]
    meta: dict[str, str] = field(default_factory=dict)
    type_name: ClassVar[str] = "tensors"

    def save(self, folder: Path) -> list[str]:
        from safetensors.torch import save

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.tensors.items()}
        data = save(tensors, metadata={k: str(v) for k, v in self.meta.items()})
        (folder / "tensors.safetensors").write_bytes(data)  # a full disk: OSError(ENOSPC), as for images
        return ["tensors.safetensors"]

    @classmethod
    def load(cls, folder: Path) -> "Tensors":
        from safetensors import safe_open

        path = str(folder / "tensors.safetensors")
        with safe_open(path, framework="pt") as f:
            return cls({k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {}))


@dataclass
class Data(Artifact):
    """A small JSON-serialisable mapping."""

    value: dict[str, Any]
    type_name: ClassVar[str] = "data"

    def save(self, folder: Path) -> list[str]:
        (folder / "data.json").write_text(json.dumps(self.value, indent=2, sort_keys=True, ensure_ascii=False))
        return ["data.json"]

    @classmethod
    def load(cls, folder: Path) -> "Data":
        return cls(json.loads((folder / "data.json").read_text()))


@dataclass
class File(Artifact):
    """An encoded asset: ``payload`` bytes, ``name`` a safe file name such as ``cover_42.png``."""

    payload: bytes
    name: str
    type_name: ClassVar[str] = "file"

    def save(self, folder: Path) -> list[str]:
        (folder / "payload").write_bytes(self.payload)
        (folder / "name.txt").write_text(self.name)
        return ["payload", "name.txt"]

    @classmethod
    def load(cls, folder: Path) -> "File":
        return cls((folder / "payload").read_bytes(), (folder / "name.txt").read_text())


ARTIFACT_TYPES: dict[str, type[Artifact]] = {c.type_name: c for c in (Image, Tensors, Data, File)}

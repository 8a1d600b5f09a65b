"""Measure the post-processing choices the SR recipes make (docs/recipes.md quotes the output).

skimage's astronaut (512x512 photo) and chelsea (a cat, cropped to 448x448) are shrunk by a
factor f (Lanczos), then brought back to the original size by each candidate chain:

* ``lanczos``                     - PIL Lanczos up
* ``<model>``                     - Real-ESRGAN (zitflow's super_resolve: x4 net, then Lanczos to size)
* ``sharpen+<model>``             - the recipes' unsharp mask (amount 0.5, radius 1.2) before SR

Reported per chain: PSNR against the original (dB, higher = closer to the truth) and the
variance of the Laplacian (a no-reference sharpness measure; the original's value is printed
for reference: a chain far above it is over-sharpened, far below it is soft). Seconds are CPU
wall time on this machine and only indicative.

    .venv/bin/python bench/measure_recipe_choices.py [--factors 2 2.857] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from PIL import Image as PILImage

from zitflow.artifacts import Image
from zitflow.config import RuntimeConfig
from zitflow.stage import RunContext
from zitflow.stages.sharpen import Sharpen, SharpenParams
from zitflow.stages.super_resolve import SuperResolve, SuperResolveParams

MODELS = ("realesr-animevideov3", "realesrgan-x4plus-anime", "realesrgan-x4plus")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def laplacian_var(px: np.ndarray) -> float:
    import cv2

    gray = cv2.cvtColor(px, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def main() -> None:
    from skimage import data

    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", type=float, nargs="+", default=[2.0, 2.857])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--json")
    ns = ap.parse_args()
    ctx = RunContext(runtime=RuntimeConfig(device="cpu", progress="off"))
    images = {"astronaut": data.astronaut(), "chelsea": data.chelsea()[:, 75:523][:300]}
    rows = []
    for name, ref in images.items():
        h, w = ref.shape[:2]
        print(f"{name} {w}x{h}: original Laplacian variance {laplacian_var(ref):.0f}")
        for f in ns.factors:
            small = np.asarray(PILImage.fromarray(ref).resize((round(w / f), round(h / f)), PILImage.LANCZOS))
            chains = {"lanczos": lambda px: np.asarray(PILImage.fromarray(px).resize((w, h), PILImage.LANCZOS))}
            for m in ns.models:
                def sr(px, m=m):
                    p = SuperResolveParams(model=m, target_width=w, target_height=h)
                    return SuperResolve().run(p, {"image": Image(px)}, ctx).pixels

                def sharp_sr(px, sr=sr):
                    s = Sharpen().run(SharpenParams(amount=0.5, radius=1.2), {"image": Image(px)}, ctx).pixels
                    return sr(s)

                chains[m] = sr
                chains[f"sharpen+{m}"] = sharp_sr
            for label, fn in chains.items():
                t0 = time.perf_counter()
                out = fn(small)
                row = {"image": name, "factor": f, "chain": label, "psnr_db": round(psnr(out, ref), 2),
                       "laplacian_var": round(laplacian_var(out)), "seconds": round(time.perf_counter() - t0, 2)}
                rows.append(row)
                print(f"  x{f:<6g} {label:<32} PSNR {row['psnr_db']:6.2f} dB  Laplacian var "
                      f"{row['laplacian_var']:6d}  {row['seconds']:.2f} s", flush=True)
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

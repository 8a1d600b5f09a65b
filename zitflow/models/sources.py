"""Where the weights come from: a :class:`~zitflow.config.ModelConfig` resolved to a local folder.

A resolved model is a folder in diffusers layout (``model_index.json`` plus ``transformer/``,
``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) and an identity for cache keys.

Sources (``model.source``):

* ``tiny`` - the locally built tiny model (:mod:`zitflow.models.tiny`), never downloaded;
* ``random`` - the full-size architecture with random weights, built in memory by the pool
  (:mod:`zitflow.models.random_full`); no folder, its identity is architecture and seed;
* ``local`` - ``model.path``;
* ``modelscope`` / ``huggingface`` - hub ``model.id`` at ``model.revision``: the local hub cache
  first (offline), then a download;
* ``auto`` - ``model.path`` if set; else the ModelScope cache, the Hugging Face cache (both
  offline), then a ModelScope download, then a Hugging Face download.

Downloads are only tried when the hub's host completes a TLS handshake within
:data:`PROBE_TIMEOUT_S` seconds (checked in a daemon thread, so a hanging DNS lookup cannot hang
us) and neither ``ZITFLOW_OFFLINE=1`` nor (for Hugging Face) ``HF_HUB_OFFLINE=1`` is set. When
nothing works, :class:`ModelNotFound` lists every attempt and how to point at a local copy.

The identity is the folder's *fingerprint*: a SHA-256 over ``model_index.json``, every
component's config, the tokenizer files, the weight index files, and for each ``.safetensors``
file its size, its header (tensor names, dtypes, shapes) and 16 evenly spaced 4 KiB samples of
its data. It costs milliseconds for 20 GB of weights, does not depend on where the copy came
from (the same weights from ModelScope, Hugging Face or a local folder share cache entries), and a
fine-tune with the same shapes still changes it. Library version stamps
(``_diffusers_version``, ``transformers_version``, ``_name_or_path``) are left out.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

COMPONENTS = ("scheduler", "text_encoder", "tokenizer", "transformer", "vae")
#: Files a hub download needs (the repo may hold more: README images, other formats).
HUB_PATTERNS = ["model_index.json", *(f"{c}/*" for c in COMPONENTS)]
HOSTS = {"modelscope": "www.modelscope.cn", "huggingface": "huggingface.co"}
PROBE_TIMEOUT_S = 3.0
DEFAULT_ID = "Tongyi-MAI/Z-Image-Turbo"
#: Keys of saved configs that record who wrote them, not what the model is.
VOLATILE_KEYS = frozenset({"_diffusers_version", "transformers_version", "_name_or_path", "_commit_hash",
                           "_name_or_id"})
SAMPLES_PER_FILE = 16
SAMPLE_BYTES = 4096


class ModelNotFound(RuntimeError):
    """No usable weights; the message lists what was tried and how to point at a local copy."""


@dataclass(frozen=True)
class ResolvedModel:
    """A usable model folder.

    ``source`` says what found it (``tiny``, ``local``, ``modelscope-cache``, ``huggingface-cache``,
    ``modelscope``, ``huggingface``, or ``adopted`` for models handed to the pool in memory);
    ``revision`` is the hub commit when the folder is a hub snapshot; ``fingerprint`` is the
    content identity described in the module docstring.
    """

    path: Path | None
    source: str
    fingerprint: str
    id: str = ""
    revision: str | None = None
    label: str = ""
    tried: tuple[str, ...] = field(default=(), compare=False)

    def identity(self) -> dict[str, Any]:
        """What enters the cache keys of model stages."""
        return {"model": self.fingerprint}

    def describe(self) -> dict[str, Any]:
        """For logs and manifests: where the weights came from."""
        return {"label": self.label, "source": self.source, "id": self.id, "revision": self.revision,
                "path": str(self.path) if self.path else None, "fingerprint": self.fingerprint[:16]}


# -- folders -----------------------------------------------------------------------------------
def check_folder(path: Path) -> list[str]:
    """Problems that make ``path`` unusable as a diffusers-layout Z-Image folder (empty: fine)."""
    if not path.is_dir():
        return [f"{path} is not a folder"]
    if not (path / "model_index.json").is_file():
        return [f"{path} has no model_index.json (not a diffusers-layout folder)"]
    return [f"{path} has no {c}/ subfolder" for c in COMPONENTS if not (path / c).is_dir()]


def _json_digest(path: Path) -> bytes:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return hashlib.sha256(path.read_bytes()).digest()

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in VOLATILE_KEYS}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return hashlib.sha256(json.dumps(strip(data), sort_keys=True, ensure_ascii=False).encode()).digest()


def safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where tensor data starts) of a ``.safetensors`` file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError(f"{path}: implausible safetensors header length {n}")
        return json.loads(f.read(n)), 8 + n


def _safetensors_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(min(n, 100_000_000))
        h.update(header)
        start = 8 + n
        span = max(size - start - SAMPLE_BYTES, 0)
        for i in range(SAMPLES_PER_FILE):
            f.seek(start + (span * i) // max(SAMPLES_PER_FILE - 1, 1))
            h.update(f.read(SAMPLE_BYTES))
    return h.digest()


def fingerprint(folder: Path) -> str:
    """SHA-256 hex identity of a diffusers-layout folder (see the module docstring)."""
    folder = Path(folder)
    h = hashlib.sha256(b"zitflow-model-fingerprint-1\0")
    files = [folder / "model_index.json"]
    for comp in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files += sorted(p for p in comp.iterdir() if p.is_file())
    for path in files:
        rel = path.relative_to(folder).as_posix()
        name = path.name
        if name.endswith(".safetensors"):
            digest = _safetensors_digest(path)
        elif name.endswith(".json"):
            digest = _json_digest(path)
        elif name.endswith((".txt", ".jinja", ".model", ".tiktoken")):
            digest = hashlib.sha256(path.read_bytes()).digest()
        else:
            continue  # other weight formats are never loaded (no pickle), notes and images don't count
        h.update(rel.encode() + b"\0" + digest)
    return h.hexdigest()


def snapshot_revision(path: Path) -> str | None:
    """The commit of a hub cache snapshot (``.../snapshots/<commit>``), else None."""
    return path.name if path.parent.name == "snapshots" else None


# -- hubs --------------------------------------------------------------------------------------
def offline(hub: str) -> bool:
    """True when the environment forbids network access for ``hub``."""
    flags = ["ZITFLOW_OFFLINE"] + (["HF_HUB_OFFLINE"] if hub == "huggingface" else [])
    return any(os.environ.get(f, "").strip().lower() in ("1", "true", "yes", "on") for f in flags)


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether ``host:port`` completes a TLS handshake for ``host`` within ``timeout`` s (DNS included).

    A handshake, not just a TCP connect: sandboxes and captive proxies accept any connection.
    """
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                with ssl.create_default_context().wrap_socket(sock, server_hostname=host):
                    result.append(True)
        except (OSError, ValueError):
            result.append(False)

    t = threading.Thread(target=probe, daemon=True, name=f"zitflow-probe-{host}")
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _modelscope(model_id: str, revision: str, local_only: bool) -> Path:
    from modelscope import snapshot_download

    os.environ.setdefault("MODELSCOPE_API_HTTP_CLIENT_CONNECT_TIMEOUT", "10")
    rev = None if revision in ("", "main", "master") else revision
    return Path(snapshot_download(model_id, revision=rev, local_files_only=local_only,
                                  allow_patterns=HUB_PATTERNS))


def _huggingface(model_id: str, revision: str, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model_id, revision=revision or None, local_files_only=local_only,
                                  allow_patterns=HUB_PATTERNS, etag_timeout=10))


HUB_FETCHERS: dict[str, Callable[[str, str, bool], Path]] = {"modelscope": _modelscope, "huggingface": _huggingface}


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _try_hub(hub: str, model_id: str, revision: str, local_only: bool, tried: list[str]) -> Path | None:
    what = f"{hub} {'cache' if local_only else 'download'} of {model_id}@{revision or 'main'}"
    if not local_only:
        if offline(hub):
            tried.append(f"{what}: skipped, offline mode "
                         f"({'ZITFLOW_OFFLINE or HF_HUB_OFFLINE' if hub == 'huggingface' else 'ZITFLOW_OFFLINE'} is set)")
            return None
        if not reachable(HOSTS[hub]):
            tried.append(f"{what}: skipped, {HOSTS[hub]}:443 not reachable within {PROBE_TIMEOUT_S:g} s (no network?)")
            return None
    try:
        path = HUB_FETCHERS[hub](model_id, revision, local_only)
    except ImportError as e:
        tried.append(f"{what}: the {hub} client is not installed ({_short(e)})")
        return None
    except Exception as e:  # noqa: BLE001 - every hub error becomes one line of the report
        tried.append(f"{what}: {type(e).__name__}: {_short(e)}")
        return None
    problems = check_folder(path)
    if problems:
        tried.append(f"{what}: found {path}, but {problems[0]}")
        return None
    return path


def _not_found(config, tried: list[str]) -> ModelNotFound:
    lines = "\n".join(f"  - {t}" for t in tried)
    return ModelNotFound(
        f"no weights for model '{config.name}' (source={config.source}, id={config.id or DEFAULT_ID}). Tried:\n"
        f"{lines}\n"
        f"Point at a local copy in diffusers layout (the folder holding model_index.json) with "
        f"model.path=/dir (e.g. `python -m zitflow model=zimage_turbo model.path=/data/Z-Image-Turbo`), "
        f"download it on a connected machine with `modelscope download --model {config.id or DEFAULT_ID}` "
        f"or `hf download {config.id or DEFAULT_ID}`, or run offline with the tiny model: model=tiny.")


def resolve(config) -> ResolvedModel:
    """Find ``config``'s weights as a local folder and fingerprint it; :class:`ModelNotFound` if none.

    Never waits on the network for long: caches are read offline, and a download is attempted only
    after a short reachability probe (see the module docstring).
    """
    source = config.source
    label = config.name
    tried: list[str] = []
    if source == "random":
        from . import random_full

        return ResolvedModel(None, "random", random_full.fingerprint(config.seed), id=f"random-full-{config.seed}",
                             label=label)
    if source == "tiny":
        from .tiny import ensure_tiny

        path = ensure_tiny(config.seed)
        return ResolvedModel(path, "tiny", fingerprint(path), id=f"tiny-{config.seed}", label=label)

    if source == "local" or (source == "auto" and config.path):
        if not config.path:
            raise ModelNotFound(f"model '{label}': source=local needs model.path=/dir, the folder in diffusers "
                                f"layout that holds model_index.json")
        path = Path(os.path.expanduser(str(config.path)))
        problems = check_folder(path)
        if problems:
            raise ModelNotFound(f"model '{label}', field 'path': {problems[0]}; model.path must name the folder "
                                f"that holds model_index.json and the {', '.join(COMPONENTS)} subfolders")
        return ResolvedModel(path, "local", fingerprint(path), id=config.id, revision=snapshot_revision(path),
                             label=label)

    model_id = config.id or DEFAULT_ID
    hubs = {"modelscope": ["modelscope"], "huggingface": ["huggingface"],
            "auto": ["modelscope", "huggingface"]}[source]
    for local_only in (True, False):
        for hub in hubs:
            path = _try_hub(hub, model_id, config.revision, local_only, tried)
            if path is not None:
                kind = f"{hub}-cache" if local_only else hub
                return ResolvedModel(path, kind, fingerprint(path), id=model_id, revision=snapshot_revision(path),
                                     label=label, tried=tuple(tried))
    raise _not_found(config, tried)

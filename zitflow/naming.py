"""Safe export file names: a ``{placeholder}`` template rendered and reduced to ``[A-Za-z0-9._-]``.

A template such as ``"{recipe}_{seed}_{stage}"`` is checked once (:func:`check_template`: only
the placeholders in :data:`PLACEHOLDERS`, no attribute or index access, no ``!r`` conversions,
format specs only as a zero-padded width on the number fields, e.g. ``{seed:06}``) and rendered
per export (:func:`render_name`). Every value and the final name go through :func:`sanitize`,
so the result is one plain file name: no path separators, no ``..``, no leading dot, at most
:data:`MAX_NAME` characters with its extension. A prompt can therefore never make a path leave
the output dir (``job.safe_join`` checks that again when the file is written).
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from typing import Any, Mapping

#: placeholder -> what it renders (for docs, ``--help`` and error messages)
PLACEHOLDERS: dict[str, str] = {
    "recipe": "the recipe name (poster)",
    "seed": "the job's seed (42), 'noseed' when unset",
    "stage": "the export stage's name in the recipe (export)",
    "prompt": "the first 40 safe characters of the prompt; 'p' + 8 hex of its hash when none are safe",
    "config_hash": "the job's config hash (16 hex)",
    "model": "the model's name (zimage_turbo, tiny)",
    "width": "the exported image's width in pixels",
    "height": "the exported image's height in pixels",
    "format": "png, jpeg or webp",
}
#: placeholders that hold numbers and may carry a zero-padded width spec (``{seed:06}``)
NUMERIC = frozenset({"seed", "width", "height"})
#: longest file name produced, extension included
MAX_NAME = 120
PROMPT_CHARS = 40
#: names Windows refuses whatever the extension; prefixed with ``_``
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_SPEC = re.compile(r"^0?[0-9]{1,2}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TemplateError(ValueError):
    """A name template that cannot be rendered; the message says which placeholders exist."""


def allowed_text() -> str:
    return ", ".join("{" + p + "}" for p in PLACEHOLDERS)


def check_template(template: str) -> list[str]:
    """The placeholders ``template`` uses; :class:`TemplateError` for anything else.

    Refused: unknown names, attribute/index access (``{recipe.__class__}``, ``{seed[0]}``),
    conversions (``{prompt!r}``), format specs other than a zero-padded width on
    seed/width/height, unbalanced braces, and an empty template.
    """
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(f"name template {template!r} is empty; use e.g. '{{recipe}}_{{seed}}_{{stage}}' "
                         f"with placeholders {allowed_text()}")
    used = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise TemplateError(f"name template {template!r} is malformed ({e}); write literal braces as "
                         f"'{{{{' and '}}}}', placeholders as {allowed_text()}") from None
    for _literal, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in PLACEHOLDERS:
            raise TemplateError(f"name template {template!r}: unknown placeholder {{{field_name}}}; "
                             f"allowed: {allowed_text()}")
        if conversion:
            raise TemplateError(f"name template {template!r}: conversion '!{conversion}' in "
                             f"{{{field_name}}} is not allowed; allowed: {allowed_text()}")
        if spec:
            if field_name not in NUMERIC or not _SPEC.match(spec):
                raise TemplateError(f"name template {template!r}: format spec ':{spec}' in {{{field_name}}} "
                                 f"is not allowed; only a zero-padded width such as {{seed:06}} on "
                                 f"{', '.join(sorted(NUMERIC))}")
        used.append(field_name)
    return used


def sanitize(text: str, max_len: int = MAX_NAME, fallback: str = "image") -> str:
    """``text`` reduced to a safe file-name part: ``[A-Za-z0-9._-]``, no ``..``, no leading dot.

    Accents are folded (``é`` -> ``e``); every other run of unsafe characters (``/``, ``\\``,
    spaces, CJK, control characters) becomes one ``_``; runs of dots become one dot; leading
    ``.``, ``-`` and ``_`` and trailing ``.``, ``_`` are stripped; the result is cut to ``max_len``
    characters. An empty result is ``fallback``.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    out = _UNSAFE.sub("_", folded)
    out = re.sub(r"\.{2,}", ".", out)
    out = re.sub(r"_{2,}", "_", out)
    out = out.lstrip("._-")[:max_len].rstrip("._")
    return out or fallback


def prompt_slug(prompt: str, max_len: int = PROMPT_CHARS) -> str:
    """A short safe stand-in for a prompt: its safe characters, or ``p`` + 8 hex of its SHA-256."""
    slug = sanitize(prompt, max_len=max_len, fallback="")
    if slug:
        return slug
    return "p" + hashlib.sha256(str(prompt).encode("utf-8")).hexdigest()[:8]


def render_name(template: str, values: Mapping[str, Any], ext: str, max_len: int = MAX_NAME) -> str:
    """Render ``template`` with ``values`` into a safe ``stem.ext`` of at most ``max_len`` chars.

    Each value is sanitised before it is inserted and the whole stem again after, so separators
    in a prompt or recipe name never survive. Missing values render as ``none``
    (``noseed`` for the seed). ``ext`` is ``png``, ``jpg`` or ``webp`` (without the dot).
    """
    used = check_template(template)
    ext = sanitize(ext, max_len=8, fallback="bin").lstrip(".")
    parts: dict[str, Any] = {}
    for name in used:
        value = values.get(name)
        if name in NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int):
                try:
                    value = int(value)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    value = None
            parts[name] = value if value is not None else "noseed" if name == "seed" else "none"
        elif name == "prompt":
            parts[name] = prompt_slug(value or "")
        else:
            parts[name] = sanitize("" if value is None else str(value), fallback="none")
    rendered = ""
    for literal, field_name, spec, _conv in string.Formatter().parse(template):
        rendered += literal
        if field_name is not None:
            v = parts[field_name]
            rendered += format(v, spec) if spec and isinstance(v, int) else str(v)
    stem = sanitize(rendered, max_len=max(1, max_len - len(ext) - 1))
    if stem.split(".")[0].upper() in _RESERVED:
        stem = "_" + stem[: max(1, max_len - len(ext) - 2)]
    return f"{stem}.{ext}"


__all__ = ["PLACEHOLDERS", "MAX_NAME", "TemplateError", "check_template", "sanitize", "prompt_slug", "render_name"]

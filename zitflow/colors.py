"""Colour parameters: any PIL colour string, parsed once and checked with one message."""

from __future__ import annotations

from .params import ParamError

#: Examples the error message offers.
EXAMPLES = "'white', 'black', '#ffffff', 'rgb(255,255,255)'"


def parse_color(text: str) -> tuple[int, int, int, int]:
    """Any PIL colour string (``white``, ``#ffffff``, ``rgb(255,255,255)``, ``#00000000``) as RGBA."""
    from PIL import ImageColor

    rgba = ImageColor.getcolor(str(text), "RGBA")
    return tuple(int(c) for c in rgba)  # type: ignore[return-value]


def check_color(field: str, value: object, examples: str = EXAMPLES) -> None:
    """:class:`ParamError` naming ``field`` when ``value`` is no PIL colour."""
    try:
        parse_color(str(value))
    except (ValueError, TypeError):
        raise ParamError(field, f"got {value!r}; allowed: a PIL colour such as {examples}") from None

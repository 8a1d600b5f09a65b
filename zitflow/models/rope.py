"""Z-Image's rotary position embedding in real arithmetic, for the compiled DiT.

diffusers' ``ZSingleStreamAttnProcessor`` rotates queries and keys as complex numbers
(``view_as_complex(x) * freqs_cis``). Inductor generates no code for complex operators: inside a
compiled block the product runs as a separate eager kernel, with the queries and keys written
out in fp32 before it and read back after it, twice per attention call. The same rotation in
real arithmetic, ``(a, b) -> (a cos - b sin, a sin + b cos)`` on the interleaved pairs, fuses
with the q/k norm and the cast back to bf16 into one kernel.

The arithmetic is the complex product's own (both in fp32, then rounded to the input dtype), so
the result agrees with the complex form to float rounding; it is installed only under
``runtime.compile`` (:func:`use_real_rope`), so an eager run stays bit-identical to the stock
pipeline.

Hand-written because the processor is diffusers' with one function changed: diffusers offers no
switch for it. The rest of :meth:`RealRopeAttnProcessor.__call__` follows diffusers 0.42's.
"""

from __future__ import annotations

import functools
from typing import Any

#: the bench turns this off to measure the complex form side by side; nothing else should
ENABLED = True


def rotate(x: Any, freqs_cis: Any) -> Any:
    """Rotate ``x`` (B, S, H, D), D even, any float dtype, by ``freqs_cis`` (B, S, D/2) complex64.

    Returns ``x``'s shape and dtype. Element pairs (2i, 2i+1) of the last axis are the real and
    imaginary parts, as in ``view_as_complex``; the product is computed in fp32.
    """
    import torch

    with torch.amp.autocast("cuda", enabled=False):
        pairs = x.float().unflatten(-1, (-1, 2))
        a, b = pairs[..., 0], pairs[..., 1]
        f = torch.view_as_real(freqs_cis).unsqueeze(2)  # (B, S, 1, D/2, 2): a view, no complex kernel
        cos, sin = f[..., 0], f[..., 1]
        out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
        return out.type_as(x)


@functools.cache
def _processor_class():
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    class RealRopeAttnProcessor(ZSingleStreamAttnProcessor):
        """``ZSingleStreamAttnProcessor`` with :func:`rotate` for the rotary embedding."""

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
            query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
            key = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
            value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
            if attn.norm_q is not None:
                query = attn.norm_q(query)
            if attn.norm_k is not None:
                key = attn.norm_k(key)
            if freqs_cis is not None:
                query, key = rotate(query, freqs_cis), rotate(key, freqs_cis)
            dtype = query.dtype
            if attention_mask is not None and attention_mask.ndim == 2:
                attention_mask = attention_mask[:, None, None, :]
            hidden_states = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                                  is_causal=False, backend=self._attention_backend,
                                                  parallel_config=self._parallel_config)
            output = attn.to_out[0](hidden_states.flatten(2, 3).to(dtype))
            if len(attn.to_out) > 1:  # dropout
                output = attn.to_out[1](output)
            return output

    return RealRopeAttnProcessor


def use_real_rope(dit: Any) -> int:
    """Give each of ``dit``'s Z-Image attention modules the real-arithmetic processor, keeping its
    attention backend; idempotent (and a no-op while :data:`ENABLED` is false). Returns how many
    processors it replaced now."""
    if not ENABLED:
        return 0
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    cls = _processor_class()
    replaced = 0
    for module in dit.modules():
        old = getattr(module, "processor", None)
        if type(old) is not ZSingleStreamAttnProcessor:  # already real, or a processor of someone else's
            continue
        new = cls()
        new._attention_backend, new._parallel_config = old._attention_backend, old._parallel_config
        module.set_processor(new)
        replaced += 1
    return replaced

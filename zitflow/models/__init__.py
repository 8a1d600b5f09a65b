"""Model loading for generation: where weights come from, the tiny model, the pool, memory plans.

* :mod:`.sources`   - a ``ModelConfig`` resolved to a local diffusers-layout folder and its identity;
* :mod:`.tiny`      - ``model=tiny``: the real architecture at a tiny size, random weights, built locally;
* :mod:`.pool`      - the process-wide pool (``ctx.models``): each component loads once, loads counted;
* :mod:`.memory`    - memory plans and their byte estimates (pure functions, e.g. :func:`.memory.fits`);
* :mod:`.placement` - moving modules as a plan says, and the out-of-memory step-down;
* :mod:`.compile`   - ``runtime.compile``: regional torch.compile and its persistent cache;
* :mod:`.precision` - ``runtime.precision`` (FP8 DiT linears) and ``runtime.attention`` (backend).

Heavy imports (torch, diffusers, transformers) happen inside functions, so importing this
package is cheap.
"""

from .memory import PLANS, Plan, fits
from .sources import ModelNotFound, ResolvedModel, resolve

__all__ = ["PLANS", "Plan", "fits", "ModelNotFound", "ResolvedModel", "resolve"]

"""Session-wide test configuration.

Rank promotion is an error for the whole session: a per-example coefficient of shape [B] silently
broadcasting against [B, H, W, C] (or [B, D]) is the classic diffusion-code bug, and this turns
it into an immediate exception (as diffrax / equinox configure their tests). Nothing else is
changed globally: computations stay float32 (x64 is not enabled).
"""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")

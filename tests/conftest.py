import jax

# Catches the classic [B] * [B, H, W, C] broadcasting bug at once (as diffrax / equinox do).
jax.config.update("jax_numpy_rank_promotion", "raise")

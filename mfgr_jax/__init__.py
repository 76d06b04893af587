"""mfgr_jax: Memory-Free Generative Replay for class-incremental learning, in JAX/Flax."""

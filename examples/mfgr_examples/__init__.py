"""Example method plugins for mfgr_jax (examples/pyproject.toml declares them)."""

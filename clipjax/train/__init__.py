"""Training: optimizer, per-method losses, the loop, checkpoints (`python -m clipjax.main`)."""

"""Training: the optimizer, the jitted step, the loop, checkpoints and the work dir
(`python -m clipjax.main`). The methods' embeddings and losses are in `clipjax.methods`."""

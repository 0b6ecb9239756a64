"""One process of a two-host CPU run (launched by test_mesh.py): 4 local devices each,
jax.distributed over localhost with gloo collectives. Prints the global CLIP loss."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import numpy as np  # noqa: E402

from clipjax.losses import clip_loss  # noqa: E402
from clipjax.parallel.mesh import (  # noqa: E402
  host_batch_to_global,
  initialize_distributed,
  make_mesh,
  on_mesh,
)


def main():
  port, process_id = sys.argv[1], int(sys.argv[2])
  initialize_distributed(f"localhost:{port}", num_processes=2, process_id=process_id)
  assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
  mesh = make_mesh()
  rng = np.random.default_rng(0)  # same global batch on both hosts; each feeds its half
  image, text = (rng.normal(size=(32, 8)).astype(np.float32) for _ in range(2))
  image /= np.linalg.norm(image, axis=1, keepdims=True)
  text /= np.linalg.norm(text, axis=1, keepdims=True)
  rows = slice(16 * process_id, 16 * (process_id + 1))
  batch = host_batch_to_global({"image": image[rows], "text": text[rows]}, mesh)
  assert batch["image"].shape == (32, 8)
  loss = jax.jit(on_mesh(clip_loss, mesh))(batch["image"], batch["text"], np.float32(10.0))
  print(f"LOSS {float(loss):.8f}", flush=True)


if __name__ == "__main__":
  main()

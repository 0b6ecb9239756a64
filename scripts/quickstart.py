r"""Quick start with the base install (no torch): build a model, preprocess an image, tokenize
captions, encode both and rank the captions for the image.

  python scripts/quickstart.py [--arch=ViT-B-32] [--image=photo.jpg] [--checkpoint=model.safetensors]

Without --checkpoint the weights are random (no model hub is needed or contacted), so the
ranking is meaningless but every stage runs; with an OpenCLIP checkpoint it is real zero-shot.
"""
import time

from absl import app, flags

flags.DEFINE_string("arch", "ViT-B-32", "open_clip architecture name.")
flags.DEFINE_string("image", None, "An image file; a drawn test picture if unset.")
flags.DEFINE_string("checkpoint", None, "OpenCLIP .safetensors/.pt/.bin; random init if unset.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  start = time.perf_counter()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from PIL import Image, ImageDraw

  import clipjax

  if FLAGS.checkpoint:
    model, params = clipjax.load_openclip(FLAGS.checkpoint, arch=FLAGS.arch)
  else:
    model, params = clipjax.create_model(FLAGS.arch)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"{FLAGS.arch}: {n_params / 1e6:.1f}M parameters ({'loaded' if FLAGS.checkpoint else 'random'})")

  if FLAGS.image:
    image = Image.open(FLAGS.image)
  else:
    image = Image.new("RGB", (320, 240), "skyblue")
    ImageDraw.Draw(image).ellipse((110, 70, 210, 170), fill="red")
  transform = clipjax.image_transform(FLAGS.arch, train=False)
  pixels = transform(image)[None]  # [1, H, W, 3] float32

  captions = ["a red circle on a blue background", "a photo of a dog", "a diagram of a car"]
  tokenizer = clipjax.get_tokenizer(FLAGS.arch)
  ids = tokenizer(captions)  # int32 [3, 77]

  img = model.apply({"params": params}, pixels, method=model.encode_image)
  txt = model.apply({"params": params}, ids, method=model.encode_text)
  img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
  txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
  probs = jax.nn.softmax(jnp.exp(params["logit_scale"]) * img @ txt.T, axis=-1)[0]
  print(f"image {pixels.shape} -> embedding {img.shape}; captions {ids.shape} -> {txt.shape}")
  for p, c in sorted(zip(np.asarray(probs), captions), reverse=True):
    print(f"  {p:6.3f}  {c}")
  print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  app.run(main)

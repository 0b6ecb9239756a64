r"""Quick start with the base install (no torch): build a model, preprocess an image, tokenize
captions, encode both and rank the captions for the image.

  python scripts/quickstart.py [--image=photo.jpg] [--checkpoint=workdirs/draft/export/open_clip_model.safetensors]
  python scripts/quickstart.py --checkpoint=ViT-B-32 --pretrained=laion2b_s34b_b79k

Without --checkpoint the weights are random (no model hub is needed or contacted), so the
ranking is meaningless but every stage runs; with OpenCLIP weights (any name
`clipjax.load_openclip` takes; the architecture comes with them) it is real zero-shot.
"""
import time

from absl import flags

from clipjax import cli

flags.DEFINE_string("arch", None, "open_clip architecture name; by default the checkpoint's "
                    "own, ViT-B-32 for random weights.")
flags.DEFINE_string("image", None, "An image file; a drawn test picture if unset.")
flags.DEFINE_string("checkpoint", None, "OpenCLIP weights: a file, directory, hf-hub:ORG/REPO, "
                    "local-dir:DIR or an architecture with --pretrained; random init if unset.")
flags.DEFINE_string("pretrained", None, "open_clip pretrained tag for --checkpoint=ARCH.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  start = time.perf_counter()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from PIL import Image, ImageDraw

  import clipjax
  import clipjax.errors
  from clipjax.convert.load import load_or_create
  from clipjax.models.clip import l2_normalize
  model, params, transform, name = load_or_create(FLAGS.checkpoint, FLAGS.pretrained,
                                                  arch=FLAGS.arch)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"{name}: {n_params / 1e6:.1f}M parameters")

  if FLAGS.image:
    try:
      image = Image.open(FLAGS.image)
    except OSError as e:
      raise clipjax.errors.UserError(f"--image={FLAGS.image}: {e}") from None
  else:
    image = Image.new("RGB", (320, 240), "skyblue")
    ImageDraw.Draw(image).ellipse((110, 70, 210, 170), fill="red")
  pixels = transform(image)[None]  # [1, H, W, 3] float32

  captions = ["a red circle on a blue background", "a photo of a dog", "a diagram of a car"]
  tokenizer = clipjax.get_tokenizer(model.cfg)
  ids = tokenizer(captions)  # int32 [3, context]

  img = model.apply({"params": params}, pixels, method=model.encode_image)
  txt = model.apply({"params": params}, ids, method=model.encode_text)
  img, txt = l2_normalize(img), l2_normalize(txt)
  probs = jax.nn.softmax(jnp.exp(params["logit_scale"]) * img @ txt.T, axis=-1)[0]
  print(f"image {pixels.shape} -> embedding {img.shape}; captions {ids.shape} -> {txt.shape}")
  for p, c in sorted(zip(np.asarray(probs), captions), reverse=True):
    print(f"  {p:6.3f}  {c}")
  print(f"done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
  cli.run(main)

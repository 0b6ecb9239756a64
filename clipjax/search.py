r"""Text-to-image search over a folder of your own photos with an ANN (FAISS HNSW) index.

  python -m clipjax.search --index=~/photo-index --images=~/Pictures \
      --checkpoint=workdirs/draft/export/open_clip_model.safetensors
  python -m clipjax.search --index=~/photo-index --query="a red car" [--k=5] --checkpoint=...

--checkpoint takes every name `clipjax.load_openclip` takes (a file, a directory,
hf-hub:ORG/REPO, local-dir:DIR, or an architecture with --pretrained); the architecture comes
with it. Building embeds every image under --images (recursively; .jpg/.jpeg/.png/.webp) with
a progress bar; unreadable files are skipped and counted. The index records the model's name
and a fingerprint of its weights, and querying with another model is an error naming both.
"""
import pathlib

from absl import flags

from clipjax import cli
from clipjax.convert.load import load_or_create
from clipjax.data.views import ImageFiles
from clipjax.errors import UserError
from clipjax.evaluate.ann import AnnIndex
from clipjax.evaluate.embed import clip_encoders, embed_images

flags.DEFINE_string("index", None, "Index directory (written by --images, read by --query).",
                    required=True)
flags.DEFINE_string("images", None, "Folder of images to index.")
flags.DEFINE_multi_string("query", None, "Text query (repeatable).")
flags.DEFINE_integer("k", 5, "Results per query.")
flags.DEFINE_string("checkpoint", None, "OpenCLIP weights (any name load_openclip takes); "
                    "random weights if unset.")
flags.DEFINE_string("pretrained", None, "open_clip pretrained tag for --checkpoint=ARCH.")
flags.DEFINE_string("arch", None, "Architecture; by default the checkpoint's own (ViT-B-32 for "
                    "random weights).")
flags.DEFINE_integer("batch_size", 64, "Images per embedding batch.")
flags.DEFINE_integer("num_workers", 2, "Image decoding worker processes.")
flags.DEFINE_integer("ef_search", 128, "HNSW search beam width (recall vs speed).")
FLAGS = flags.FLAGS

_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def _encoders():
  """The encoders and the model's name as the user gave it."""
  model, params, _, name = load_or_create(FLAGS.checkpoint, FLAGS.pretrained, arch=FLAGS.arch)
  return clip_encoders(model, params), name


def build(folder: str, index_dir: str) -> None:

  root = pathlib.Path(folder).expanduser()  # a local folder of photos
  if not root.is_dir():
    raise UserError(f"--images={folder} is not a folder")
  paths = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in _EXTS)
  if not paths:
    raise UserError(f"no {'/'.join(_EXTS)} images under {folder}")
  encoders, name = _encoders()
  out = embed_images(encoders, ImageFiles(paths), batch_size=FLAGS.batch_size,
                     num_workers=FLAGS.num_workers)
  index = AnnIndex(encoders.embed_dim, encoders.key, model_name=name)
  index.add(out["embeddings"], [paths[i] for i in out["index"]])
  index.save(index_dir)
  skipped = int(out["bad_records"].sum())
  print(f"indexed {len(index)} images into {index_dir}"
        + (f"; skipped {skipped} unreadable files" if skipped else ""))


def query(index_dir: str, texts: list[str]) -> None:
  try:
    index = AnnIndex.load(index_dir)
  except FileNotFoundError as e:
    raise UserError(str(e)) from None
  encoders, name = _encoders()
  try:
    scores, rows = index.search(encoders.encode_texts(texts), k=FLAGS.k,
                                ef_search=FLAGS.ef_search, model_key=encoders.key,
                                model_name=name)
  except ValueError as e:
    raise UserError(str(e)) from None
  for text, s, r in zip(texts, scores, rows):
    print(f"{text!r}:")
    for score, row in zip(s, r):
      if row >= 0:
        print(f"  {score:.4f}  {index.items[row]}")


def main(argv):
  del argv
  if bool(FLAGS.images) == bool(FLAGS.query):
    raise UserError("give either --images (build the index) or --query (search it)")
  if FLAGS.images:
    build(FLAGS.images, FLAGS.index)
  else:
    query(FLAGS.index, FLAGS.query)


if __name__ == "__main__":
  cli.run(main)

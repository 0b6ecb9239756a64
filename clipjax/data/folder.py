"""A folder of images as data: captions from sidecar `.txt` files (img2dataset's `files`
output, any depth), or labels from a class tree (`root/<class>/*.jpg`, torchvision's
ImageFolder layout) for UniCL and zero-shot evaluation."""
from __future__ import annotations

import os

from clipjax.data.paths import expand_user
from clipjax.data.records import BadRecord
from clipjax.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LAYOUTS = ("auto", "captions", "classes")


def _images(directory: str) -> list[str]:
  out = []
  for parent, dirs, files in os.walk(directory):
    dirs.sort()
    out.extend(os.path.join(parent, f) for f in sorted(files)
               if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))
  return out


class FolderSource:
  """Records from an image folder.

  layout `captions`: every image under `root` (recursively) with the text of the `.txt` file of
  the same stem as its caption (an image without one is a `missing_field` bad record).
  layout `classes`: `root/<class>/...` images, label = the class's index in sorted order,
  `class_names` the folder names (underscores as spaces), and the caption `template` filled
  with the class name (UniCL's image–label prompt). `auto`: classes when `root` holds no images
  of its own but sub-folders of images, captions otherwise. `image_id` is the image's index.
  """

  def __init__(self, root: str, layout: str = "auto", template: str = "a photo of a {}."):
    self.root = expand_user(root)
    if not os.path.isdir(self.root):
      raise ConfigError(f"folder {self.root} is not a directory")
    if layout not in LAYOUTS:
      raise ConfigError(f"folder layout={layout!r} is not one of {list(LAYOUTS)}")
    if layout == "auto":
      top = [e for e in os.scandir(self.root) if e.is_file()
             and e.name.lower().endswith(IMAGE_EXTENSIONS)]
      layout = "captions" if top else "classes"
    self.layout, self.template = layout, template
    self.class_names = None
    if layout == "classes":
      classes = sorted(e.name for e in os.scandir(self.root)
                       if e.is_dir() and not e.name.startswith("."))
      self._images = [(path, label) for label, name in enumerate(classes)
                      for path in _images(os.path.join(self.root, name))]
      self.class_names = [c.replace("_", " ") for c in classes]
    else:
      self._images = [(path, None) for path in _images(self.root)]
    if not self._images:
      raise ConfigError(f"folder {self.root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) "
                        f"in the {layout} layout")

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int):
    path, label = self._images[index]
    record = {"image": path, "image_id": index, "where": path}
    if label is not None:
      return dict(record, label=label, caption=self.template.format(self.class_names[label]))
    sidecar = os.path.splitext(path)[0] + ".txt"
    try:
      with open(sidecar, "rb") as f:
        data = f.read()
    except FileNotFoundError:
      return BadRecord("missing_field", f"{path}: no caption file {os.path.basename(sidecar)}")
    try:
      record["caption"] = data.decode("utf-8").strip()
    except UnicodeDecodeError:
      return BadRecord("bad_encoding", f"{sidecar}: not valid UTF-8")
    return record

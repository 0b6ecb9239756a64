"""grain input pipelines: source -> global shuffle -> host shard -> repeat -> decode/augment/
tokenize in worker processes -> skip-and-count bad records -> fixed-shape batches.

Determinism: the shuffle, each record's augmentation RNG and the worker assignment are pure
functions of (seed, index), so a restored iterator state reproduces the exact batches of an
uninterrupted run. Every batch carries `bad_records` (int64 [len(BAD_REASONS)]): the records
skipped since the previous batch of that worker, by reason, for the training logs.
"""
from __future__ import annotations

import collections
import concurrent.futures
import io
import re
import signal
import warnings
from typing import Any, Sequence

import grain
import jax
import numpy as np
from absl import flags
from etils import epath
from PIL import Image, UnidentifiedImageError

from clipjax.data.records import BadRecord, dialogue_text, format_qa
from clipjax.data.batching import WORKER, LengthBatches, SkipCountBatch
from clipjax.data.naflex import make_image_transform
from clipjax.data.views import MapRecords, SafeRecords
from clipjax.parallel.mesh import host_batch_to_global
from clipjax.text.factory import make_tokenizer


_STREAM = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")
# Pillow's own decompression-bomb limit (~89.5 megapixels), the default of max_image_pixels.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# An integer field (`PrepareExample.int_fields`) the record does not have.
MISSING_FIELD = np.iinfo(np.int64).min
# PrepareExample applies its own limit from the header; Pillow's warning would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _allow_pixels(limit: int) -> None:
  """Pillow refuses images over twice its process-wide limit before we see their size: a
  larger data.max_image_pixels raises that limit in this process (a data worker)."""
  if limit and Image.MAX_IMAGE_PIXELS and limit > Image.MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = limit


class PrepareExample:
  """Decode + augment (train) or resize-crop (eval) + tokenize one record, in a worker.

  Returns a dict of fixed-shape arrays, or a BadRecord (`strict=False`), or raises ValueError
  naming the record (`strict=True`). Nothing one record holds raises otherwise: an image over
  `max_image_pixels` (read from its header, before decoding) is `too_large`, a missing image
  or text field `missing_field`, any other failure `error` with the exception.

  `image` is uint8 [S, S, 3] by default (normalised on the device by
  `clipjax.pixels.normalize_on_device`: a quarter of the bytes through worker IPC, which doubled
  grain's throughput here); `uint8=False` gives normalised float32. `with_image=False`
  leaves images undecoded and out of the batch (their embeddings are cached). `int_fields`:
  integer record fields carried into the batch as int64 (`MISSING_FIELD` where a record has
  none), e.g. the linear probe's targets.
  """

  def __init__(self, image_size: int, train: bool, text_fields: Sequence[str] = ("caption",),
               context_length: int = 77, strict: bool = False, uint8: bool = True,
               with_image: bool = True, hf_tokenizer: str | None = None,
               tokenizer_kwargs: tuple = (), preprocess: dict | None = None,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, int_fields: Sequence[str] = ()):
    self.image_size, self.train, self.strict, self.uint8 = image_size, train, strict, uint8
    self.int_fields = tuple(int_fields)
    self.max_image_pixels = max_image_pixels
    _allow_pixels(max_image_pixels)
    self.preprocess = dict(preprocess or {})  # image_transform's mean/std/resize options
    self.with_image, self.hf_tokenizer = with_image, hf_tokenizer
    self.tokenizer_kwargs = tuple(tokenizer_kwargs)  # open_clip's tokenizer_kwargs
    self.text_fields, self.context_length = tuple(text_fields), context_length
    self._transforms = {None: self._make_transform(None)}
    self._tokenizer = None

  def _make_transform(self, length: int | None):
    options = dict(self.preprocess, **({"max_num_patches": length} if length else {}))
    return make_image_transform(self.image_size, train=self.train, uint8=self.uint8, **options)

  def __getstate__(self):  # the tokenizer is rebuilt in each worker
    return {k: v for k, v in self.__dict__.items() if k not in ("_tokenizer", "_transforms")}

  def __setstate__(self, state):
    self.__dict__.update(state)
    _allow_pixels(self.max_image_pixels)
    self._transforms = {None: self._make_transform(None)}
    self._tokenizer = None

  def _bad(self, reason: str, detail: str):
    if self.strict:
      raise ValueError(f"bad record ({reason}): {detail}")
    return BadRecord(reason, detail)

  def _image(self, image, where: str) -> Image.Image | BadRecord:
    """`where`: the record's name, which an encoded image (bytes) has instead of a path."""
    if isinstance(image, np.ndarray):
      return Image.fromarray(image)
    name = where if isinstance(image, bytes) else str(image)
    try:
      if isinstance(image, bytes):
        pil = Image.open(io.BytesIO(image))
      elif "://" in str(image):  # cloud paths go through etils; local files open directly
        pil = Image.open(io.BytesIO(epath.Path(image).read_bytes()))
      else:
        pil = Image.open(image)
      width, height = pil.size
      if self.max_image_pixels and width * height > self.max_image_pixels:
        return self._bad("too_large", f"{name}: {width}x{height} pixels, over the limit of "
                                      f"{self.max_image_pixels} (data.max_image_pixels)")
      pil.load()  # decode now: truncated files fail here, not later
      return pil
    except Image.DecompressionBombError as e:  # over twice Pillow's process-wide limit
      return self._bad("too_large", f"{name}: {e}")
    except FileNotFoundError:
      return self._bad("missing_file", name)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
      # Pillow names a stream by its address, which differs on every read of the same record.
      message = _STREAM.sub("the image bytes", str(e))
      return self._bad("corrupt_image", f"{name}: {message}")

  def __call__(self, record, rng: np.random.Generator | None = None,
               length: int | None = None):
    """`length`: a NaFlex tower's sequence length for this record (its batch's); None = the
    transform's own."""
    if isinstance(record, BadRecord):
      if self.strict:
        raise ValueError(f"bad record ({record.reason}): {record.detail}")
      return record
    try:
      return self._prepare(record, rng, length)
    except Exception as e:  # a record must never stop the pipeline: counted and named
      if self.strict:
        raise
      where = record.get("where") if isinstance(record, dict) else None
      return BadRecord("error", f"{where or 'a record'}: {type(e).__name__}: {e}"[:500])

  def _prepare(self, record: dict, rng: np.random.Generator | None, length: int | None):
    if self._tokenizer is None:
      self._tokenizer = make_tokenizer(self.context_length, self.hf_tokenizer,
                                       self.tokenizer_kwargs)
    texts = {}
    where = record.get("where") or f"image_id {record.get('image_id')}"
    for field in self.text_fields:
      if field == "dialogue":
        dialogue = record.get("dialogue") or []
        if not dialogue:
          return self._bad("missing_dialogue", f"{where}: no dialogue")
        texts[field] = format_qa(*dialogue[0]) if len(dialogue) == 1 else dialogue_text(dialogue)
      else:
        if field not in record:
          return self._bad("missing_field", f"{where}: no {field} field")
        text = record.get(field) or ""
        if not text.strip():
          return self._bad("empty_caption", f"{where}: empty {field}")
        texts[field] = text
    label = record.get("label")
    out = {"image_id": np.int64(record.get("image_id", -1)),
           "label": np.int64(-1 if label is None else label)}
    for field in self.int_fields:
      out[field] = np.int64(record[field] if record.get(field) is not None else MISSING_FIELD)
    if "record_index" in record:  # key of a cached caption embedding
      out["record_index"] = np.int64(record["record_index"])
    for cached in ("image_embedding", "teacher_image_embedding"):  # rows of a cached tower
      if cached in record:                                         # (data/views.py)
        out[cached] = record[cached]
    if self.with_image:
      if record.get("image") is None:
        return self._bad("missing_field", f"{where}: no image field")
      pil = self._image(record["image"], where)
      if isinstance(pil, BadRecord):
        known = "where" in record and not pil.detail.startswith(record["where"])
        return BadRecord(pil.reason, f"{record['where']}: {pil.detail}") if known else pil
      if length not in self._transforms:
        self._transforms[length] = self._make_transform(length)
      transform = self._transforms[length]
      out["image"] = transform(pil, rng) if self.train else transform(pil)
    if texts:
      out.update(zip(texts, self._tokenizer(list(texts.values()))))
    return out


class PrepareText:
  """Tokenizes a text record (`query`, `positive`, optional `negatives` list) for the jina-style
  text–text stream: int32 [L] ids, and [m, L] for negatives (a fixed m per dataset)."""
  train = False

  def __init__(self, context_length: int = 77, num_negatives: int = 0,
               hf_tokenizer: str | None = None, tokenizer_kwargs: tuple = ()):
    self.context_length, self.num_negatives = context_length, num_negatives
    self.hf_tokenizer, self.tokenizer_kwargs = hf_tokenizer, tuple(tokenizer_kwargs)
    self._tokenizer = None

  def __getstate__(self):
    return {k: v for k, v in self.__dict__.items() if k != "_tokenizer"}

  def __setstate__(self, state):
    self.__dict__.update(state, _tokenizer=None)

  def __call__(self, record):
    if isinstance(record, BadRecord):
      return record
    try:
      return self._prepare(record)
    except Exception as e:  # never stops the pipeline: counted and named
      return BadRecord("error", f"{record.get('where', 'a text record')}: {type(e).__name__}: "
                                f"{e}"[:500])

  def _prepare(self, record: dict):
    if self._tokenizer is None:
      self._tokenizer = make_tokenizer(self.context_length, self.hf_tokenizer,
                                       self.tokenizer_kwargs)
    negatives = list(record.get("negatives") or [])[:self.num_negatives]
    texts = [record.get("query") or "", record.get("positive") or "", *negatives]
    if not all(t.strip() for t in texts) or len(negatives) < self.num_negatives:
      return BadRecord("empty_caption", f"text record {record.get('query', '')[:60]!r}")
    ids = self._tokenizer(texts)
    out = {"query": ids[0], "positive": ids[1]}
    if self.num_negatives:
      out["negatives"] = ids[2:]
    return out


def synthetic_text_records(scenes):
  """Text pairs/triplets of the synthetic scenes: caption, its paraphrase, and the caption with
  one attribute of the main object swapped as the hard negative."""
  return MapRecords(scenes, _scene_text_record)


def _scene_text_record(record: dict, index: int) -> dict:
  del index
  return {"query": record["caption"], "positive": record["paraphrase"],
          "negatives": [record["hard_negative"]]}


class TwoStreams(grain.IterDataset):
  """jina-style step input: `{"text": text batch, "image_text": image–caption batch}`, each
  from its own pipeline (own source, batch size, workers). The iterator state holds both
  positions, so a checkpoint resumes both streams exactly."""

  def __init__(self, text: grain.IterDataset, image_text: grain.IterDataset):
    super().__init__([text, image_text])

  def __iter__(self):
    return _TwoStreamsIterator([p.__iter__() for p in self._parents])


class _TwoStreamsIterator(grain.DatasetIterator):
  NAMES = ("text", "image_text")

  def __next__(self) -> dict[str, dict[str, np.ndarray]]:
    text, image_text = (next(p) for p in self._parents)
    bad = text.pop("bad_records") + image_text.pop("bad_records")
    examples = text.pop("bad_examples") + image_text.pop("bad_examples")
    text.pop("mask"), image_text.pop("mask")
    return {"text": text, "image_text": image_text, "bad_records": bad,
            "bad_examples": examples}

  def get_state(self) -> dict[str, Any]:
    return {n: p.get_state() for n, p in zip(self.NAMES, self._parents)}

  def set_state(self, state: dict[str, Any]) -> None:
    for n, p in zip(self.NAMES, self._parents):
      p.set_state(state[n])

  def close(self) -> None:
    for p in self._parents:
      if hasattr(p, "close"):
        p.close()


def build_dataset(source, prepare: PrepareExample, *, batch_size: int, seed: int = 0,
                  shuffle: bool = True, num_epochs: int | None = None, num_workers: int = 2,
                  pad_remainder: bool = False, process_index: int | None = None,
                  process_count: int | None = None, read_threads: int | None = None,
                  bad_window: int | None = None, lengths=None) -> grain.IterDataset:
  """The per-host dataset of batches of `batch_size` (this host's share of the global batch).

  Hosts see disjoint strides of one global permutation per epoch (`jax.process_index()` /
  `process_count()` by default). `num_epochs=None` repeats forever.

  `read_threads`: threads reading + preparing records inside each process (grain's
  `ReadOptions.num_threads`, prefetching `2 * batch_size` records). `None` picks 0 when
  `num_workers > 0` (the worker processes are the parallelism; grain's default of 16 threads
  with a 500-record buffer costs more in bookkeeping than the work itself, scripts/bench_data.py)
  and 16 otherwise. Raise it for high-latency storage (gs://).

  `bad_window`: stop with `DataError` after that many bad records in a row (None: never).

  `lengths`: a `data.length_batches.LengthPlan` for a NaFlex image tower: batches of one
  sequence length each, drawn per batch, sized by the token budget (then `batch_size` is
  unused); records are prepared inside the batching, in the workers.
  """
  _ensure_flags_parsed()  # grain reads absl flags; outside an absl app nobody parsed them
  if process_index is None or process_count is None:
    process_index, process_count = jax.process_index(), jax.process_count()
  ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(
      SafeRecords(source))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds[process_index::process_count]
  ds = ds.repeat(num_epochs)
  if lengths is None:
    ds = ds.random_map(prepare, seed=seed + 1) if prepare.train else ds.map(prepare)
  if read_threads is None:
    read_threads = 0 if num_workers > 0 else 16
  rows = batch_size if lengths is None else max(lengths.rows)
  read = grain.ReadOptions(num_threads=read_threads,
                           prefetch_buffer_size=2 * rows if read_threads else 0)
  if lengths is None:
    ds = SkipCountBatch(ds.to_iter_dataset(read), batch_size, pad_remainder, bad_window)
  else:
    ds = LengthBatches(ds.to_iter_dataset(read), prepare, lengths, bad_window)
  if num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                        worker_init_fn=_worker_init)
  return ds


def global_batches(iterator, mesh, prefetch: int = 2):
  """Host batches -> globally sharded jax.Arrays, `prefetch` steps ahead on a thread so the
  host-to-device copy overlaps the training step. Yields dicts of jax.Arrays, except
  `bad_records` and `bad_examples`, which stay on this host (the loop aggregates them)."""


  def put(batch):
    host = ("bad_records", "bad_examples")
    rows = {k: v for k, v in batch.items() if k not in host}
    return dict(host_batch_to_global(rows, mesh), **{k: batch[k] for k in host if k in batch})

  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = collections.deque()
    for batch in iterator:
      pending.append(pool.submit(put, batch))
      if len(pending) > prefetch:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def _ensure_flags_parsed() -> None:
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _worker_init(worker_index: int, worker_count: int) -> None:
  """grain workers parse no flags of their own (absl-using code in them needs this), and leave
  Ctrl-C to the main process, which saves a checkpoint before it stops them."""
  WORKER[:] = [worker_index, worker_count]  # data.batching: a worker's share of the batches
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  _ensure_flags_parsed()

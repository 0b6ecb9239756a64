"""What every evaluation task is made of, the registry that finds one by name, and the one
parser of `config.eval`.

A task is one `Task` subclass in its own file under `clipjax/evaluate/tasks/`, registered with
`@register` (and imported in `clipjax/evaluate/tasks/__init__.py`). Its `settings` are the
defaults of its block `config.eval.<name>` (besides `source`), its `headline` the metrics the
study reports; `clipjax.evaluate.runner` only calls the hooks below, so adding a task is that
file.

Each image is embedded once (through the grain pipeline, with worker processes) and shared by
models with the same image tower; each text tower embeds the texts once; a blending sweep then
only mixes embeddings. Records that cannot be read are counted in the result (`skipped`),
never silently dropped.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping, Sequence

import numpy as np
from etils import epath

from clipjax.data.builder import check_source_spec, synthetic
from clipjax.data.records import BAD_REASONS, BadRecord
from clipjax.data.views import Subset, first_record_per_image
from clipjax.errors import ConfigError
from clipjax.evaluate.embed import Encoders, embed_images
from clipjax.options import EvalOptions, block_defaults, frozen_block, read_block


@dataclasses.dataclass
class EvalRun:
  """What every task of one `run_evaluation` shares: the output directory (and file-name
  prefix), the image batch size and loader workers, whether to draw plots, and the image
  embeddings by tower."""
  out_dir: str
  prefix: str = ""
  batch_size: int = 64
  num_workers: int = 2
  plots: bool = True
  cache: dict = dataclasses.field(default_factory=dict)

  def path(self, name: str) -> str:
    return str(epath.Path(self.out_dir) / f"{self.prefix}{name}")


class Task:
  """An evaluation task on one source."""
  name: str = ""
  # config.eval.<name>: the task's own fields and their defaults (besides `source`).
  settings: dict[str, Any] = {}
  # The split of the synthetic scenes its default source draws.
  split: str = "eval"
  # In the default `eval.tasks`.
  default: bool = True
  # (metric, column title) of the study's headline table.
  headline: tuple[tuple[str, str], ...] = ()
  # The metric a β sweep of two text towers is plotted on; None: the task has no sweep.
  sweep_metric: str | None = None
  # Fits a probe on the image embeddings: the seeds study runs it in the arms that compare
  # image towers only, on a source of its own size (`Budget.probe_size`).
  probe: bool = False
  # The caption detail its synthetic source is read at whatever the run's (None: the run's);
  # the study leaves it out of arms trained on that detail, where it repeats `retrieval`.
  caption_detail: str | None = None

  def evaluate(self, encoders: Encoders, source, cfg: Any, run: EvalRun,
               model_name: str) -> dict:
    """{"metrics": {name: value}, "skipped": {reason: count}, ...} of one model. cfg: the
    task's block (`EvalOptions.blocks[name]`: its settings under the config's values, read as
    attributes)."""
    raise NotImplementedError(f"task {self.name!r} defines no evaluation")

  def sweep(self, towers: Sequence[Encoders], source, cfg: Any, run: EvalRun,
            betas: Sequence[float]) -> dict:
    """{"sweep": [{"beta": b, **metrics}], ...} of normalise(β·T0 + (1−β)·T1) (methods.md §2)."""
    raise NotImplementedError(f"task {self.name!r} has no blending sweep")


_REGISTRY: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
  """Class decorator: makes `cls()` available as a name in `config.eval.tasks`."""
  if not cls.name:
    raise ValueError(f"{cls.__name__} needs a `name`")
  _REGISTRY[cls.name] = cls()
  return cls


def task_names() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def get_task(name: str) -> Task:
  if name not in _REGISTRY:
    close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
    raise ConfigError(f"eval.tasks: unknown task {name!r}"
                      + (f" (did you mean {close[0]!r}?)" if close else "")
                      + f"; use {', '.join(_REGISTRY)}")
  return _REGISTRY[name]


def eval_block(size: int = 256, tasks: str | None = None) -> dict:
  """`config.eval` (fields in `clipjax.options.EvalOptions`): every registered task's block on
  held-out synthetic scenes of `size` records; `tasks` (comma-separated) defaults to the tasks
  marked `default` (text_pairs, caption -> paraphrase among paraphrases and hard negatives, is
  off)."""
  if tasks is None:
    tasks = ",".join(n for n, t in _REGISTRY.items() if t.default)
  shared = {k: v for k, v in block_defaults(EvalOptions).items() if k not in ("tasks", "blocks")}
  return dict(tasks=tasks, **shared,
              **{n: dict(source=synthetic(size, t.split), **t.settings)
                 for n, t in _REGISTRY.items()})


def eval_options(cfg: Mapping[str, Any]) -> EvalOptions:
  """The `eval` block read and checked: every task it names (`tasks`, comma-separated) is
  registered and has its own block with a valid source spec (no data read); each block gets
  its task's settings as defaults. The one parser of `eval.tasks`, for training configs and
  `clipjax.evaluate` alike."""
  default = ",".join(n for n, t in _REGISTRY.items() if t.default)
  names = tuple(t.strip() for t in str(cfg.get("tasks", default)).split(",") if t.strip())
  blocks = {}
  for name in names:
    task = get_task(name)
    if not cfg.get(name):
      raise ConfigError(f"eval.tasks includes {name!r} but the config has no eval.{name} block")
    check_source_spec(cfg[name].source, f"eval.{name}.source")
    blocks[name] = frozen_block(task.settings, cfg[name])
  return dataclasses.replace(read_block(EvalOptions, cfg), tasks=names, blocks=blocks)


def eval_tasks(opts: EvalOptions) -> list[Task]:
  """The tasks of the options, in order."""
  return [get_task(name) for name in opts.tasks]


# Shared pieces of the tasks.

def skipped(bad: np.ndarray) -> dict[str, int]:
  """Bad-record counts by reason, the non-zero ones."""
  return {r: int(n) for r, n in zip(BAD_REASONS, bad) if n}


def bad_counts(records: list) -> np.ndarray:
  """Counts by reason of the `BadRecord`s among `records`."""
  return np.bincount([BAD_REASONS.index(r.reason) for r in records if isinstance(r, BadRecord)],
                     minlength=len(BAD_REASONS))


def read_all(source) -> list:
  return [source[i] for i in range(len(source))]


def cached_images(encoders: Encoders, source, run: EvalRun,
                  int_fields: tuple[str, ...] = ()) -> dict:
  """embed_images, reused across models that share an image tower (`Encoders.image_key`)."""
  key = (encoders.image_key, repr(source), int_fields)
  if key not in run.cache:
    run.cache[key] = embed_images(encoders, source, batch_size=run.batch_size,
                                  num_workers=run.num_workers, int_fields=int_fields)
  return run.cache[key]


def embed_unique_images(encoders: Encoders, source, records: list, run: EvalRun):
  """The embeddings of the first record of each image_id; an image row -> embedding row map
  (-1: unreadable); image_id -> image row; and the bad-record counts (records and images)."""
  first = first_record_per_image(records)
  if not first:
    raise ValueError(f"{source!r} has no readable records")
  out = cached_images(encoders, Subset(source, list(first.values())), run)
  ok = np.full(len(first), -1)
  ok[out["index"]] = np.arange(len(out["index"]))
  row = {key: i for i, key in enumerate(first)}
  return out, ok, row, out["bad_records"] + bad_counts(records)

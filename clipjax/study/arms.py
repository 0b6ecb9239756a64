"""The arms of the seeds study: each one an ordinary `clipjax.main` config, built from the
method defaults (`clipjax.methods.method_config`) plus the study's budget.

Every arm trains on the embedded synthetic scenes. Adaptation arms start from the export of
their `base` arm run with the same seed; from-scratch arms train `scratch_steps` with CLIP's
learning rate, against the `clip` arm (CLIP from scratch: same steps, same data, same seed).
The base trains longer (`base_steps`): it stands in for web-scale pretraining, and `init`
(the same model untrained) is its linear probe's reference.

The default arms (`ARMS`) test the thesis's premise in miniature: one base per seed pretrained
on full captions stands in for web-scale pretraining (its image tower has learned the counts,
positions, other objects and backgrounds), and DRAFT, DRAFT without MMD, CLIP-3Modal and the
caption-only control adapt it on partial captions (naming the main object only) plus the
dialogues that tell the rest; the same four adapting it on full captions, and the from-scratch
methods, complete the claims. `PARTIAL_BASE_ARMS`: the earlier design, whose base was
pretrained on partial captions only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from clipjax.data.builder import synthetic
from clipjax.evaluate.tasks import eval_block, get_task, task_names
from clipjax.methods import method_config
from clipjax.methods.multitask import stage_config


@dataclasses.dataclass(frozen=True)
class Budget:
  """Sizes and steps of every run. `base_steps`: the base CLIP every adaptation starts from;
  `scratch_steps`: the from-scratch arms and their CLIP comparison (and jina stage 1);
  `adapt_steps`: DRAFT, CLIP-3Modal, the control (jina stages 2 and 3 share them, half each,
  so every from-scratch arm trains scratch_steps + at most adapt_steps)."""
  arch: str
  resolution: int
  train_size: int
  batch_size: int
  base_steps: int
  scratch_steps: int
  adapt_steps: int
  eval_size: int
  num_workers: int
  seeds: tuple[int, ...]
  probe_size: int = 2048  # held-out scenes of the linear probe (half fit, half score)


# The default study (budget: <= 100 minutes for 5 seeds on a 2-core CPU, docs/results.md;
# training is ~85 % of it, so the steps are what the budget buys).
# No loader worker processes: the synthetic scenes are drawn faster than a step consumes them,
# and workers would cost a start-up per run and compete with the step for the cores.
DEFAULT = Budget(arch="ViT-S-16-tiny", resolution=64, train_size=20_000, batch_size=64,
                 base_steps=360, scratch_steps=120, adapt_steps=60, eval_size=256,
                 num_workers=0, seeds=(0, 1, 2, 3, 4))
# --quick: the machinery end to end in minutes (the test suite runs it); numbers mean little.
QUICK = Budget(arch="ViT-T-16-test", resolution=32, train_size=512, batch_size=32,
               base_steps=12, scratch_steps=12, adapt_steps=6, eval_size=64, num_workers=0,
               seeds=(0,), probe_size=64)


@dataclasses.dataclass(frozen=True)
class Arm:
  """name: "method" or "variant/caption_detail"; base: the arm whose export it adapts;
  overrides: dotted config fields set last (e.g. {"draft.mmd_weight": 0.0}); start: the
  config it starts from (default `method_config(method)`; a config whose `base` chains
  earlier runs trains them first); lr: the learning rate of a from-scratch arm (None: the
  start config's own); steps: the Budget field of a from-scratch arm's steps; tasks: the
  evaluation tasks (None: every task, the linear probe only with `probe`: the bases, the
  untrained model and CLIP from scratch, whose image towers the premise compares)."""
  name: str
  method: str
  detail: str = "full"
  base: str | None = None
  overrides: tuple[tuple[str, Any], ...] = ()
  doc: str = ""
  start: Callable[[], ml_collections.ConfigDict] | None = None
  lr: float | None = 1e-3  # the base's (configs/clip.py, mult.py, unicl.py, siglip.py)
  steps: str = "scratch_steps"
  tasks: tuple[str, ...] | None = None
  probe: bool = False


def _adaptations(detail: str, base: str, suffix: str | None = None) -> list[Arm]:
  """DRAFT, DRAFT without MMD, the caption-only control and CLIP-3Modal adapting `base` on
  `detail` captions (plus dialogues), named "<method>/<suffix or detail>"."""
  tag, on = suffix or detail, f"adapting {base} on {detail} captions"
  return [
      Arm(f"draft/{tag}", "draft", detail, base,
          doc=f"DRAFT, a = 0.65 with MMD, {on}: alone, blended with the base (β sweep), WiSE-FT"),
      Arm(f"draft_no_mmd/{tag}", "draft", detail, base, (("draft.mmd_weight", 0.0),),
          doc=f"DRAFT with λ = 0 (no MMD), {on}, same blends"),
      Arm(f"caption_only/{tag}", "draft", detail, base,
          (("draft.a", 1.0), ("draft.mmd_weight", 0.0)),
          doc=f"control: the text tower fine-tuned on captions only (a = 1, λ = 0), {on}, "
              "same steps, lr, frozen image tower and blends as DRAFT"),
      Arm(f"three_tower/{tag}", "three_tower", detail, base,
          doc=f"CLIP-3Modal: the third tower G on concatenated dialogues, {on}, β sweep"),
  ]


ARMS: tuple[Arm, ...] = (
    Arm("base/full", "clip", "full", steps="base_steps", probe=True,
        doc="CLIP pretrained on full captions: the base of every adaptation, standing in for "
            "web-scale pretraining"),
    Arm("init", "clip", overrides=(("total_steps", 0),), tasks=("linear_probe",),
        doc="the base's model untrained (its random initialisation): the linear probe's "
            "reference"),
    *_adaptations("partial", "base/full"), *_adaptations("full", "base/full"),
    Arm("clip", "clip", probe=True,
        doc="CLIP from scratch: the from-scratch methods' comparison (same steps, data, seed)"),
    Arm("mult", "mult", doc="CLIP + MulT fusion tower, from scratch"),
    Arm("unicl", "unicl", doc="UniCL (image-label targets), from scratch"),
    Arm("siglip", "siglip", doc="SigLIP (sigmoid loss), from scratch"),
    Arm("multitask", "multitask", doc="jina-style stages 1 -> 2 -> 3 (text pairs + captions)",
        start=lambda: stage_config(3), lr=None),
)


# The earlier design: a base pretrained on partial captions only, adapted on partial captions.
# Its image tower never learned the facts the dialogues tell (`--study=partial_base`).
PARTIAL_BASE_ARMS: tuple[Arm, ...] = (
    Arm("base/partial", "clip", "partial", steps="base_steps", probe=True,
        doc="CLIP pretrained on partial captions only"),
    *_adaptations("partial", "base/partial", "partial_base"),
)


def _set(c: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split(".")
  for p in parents:
    c = c[p]
  c[leaf] = value


def _data(c, budget: Budget, detail: str) -> None:
  c.data.train = dict(synthetic(budget.train_size, "train", budget.resolution),
                      caption_detail=detail)
  c.data.num_workers = budget.num_workers
  if "text" in c.data:  # multitask's text-pair stream
    c.data.text = synthetic(budget.train_size, "train", budget.resolution)
    c.data.text_batch_size = budget.batch_size


def _scratch(c, budget: Budget, steps: int) -> None:
  c.total_steps = steps
  c.optim.warmup_steps = max(1, steps // 5)
  c.batch_size = budget.batch_size
  c.model.arch = budget.arch
  c.export.hf = False


def arm_config(arm: Arm, budget: Budget, seed: int,
               base_checkpoint: str | None = None) -> ml_collections.ConfigDict:
  """The clipjax.main config of `arm` for one seed (base_checkpoint: its base's export)."""
  if arm.base is None:
    c = arm.start() if arm.start else method_config(arm.method)
    chain = [c]  # this run and the runs its `base` chains (multitask: stages 3, 2, 1)
    while chain[-1].get("base") is not None:
      chain.append(chain[-1].base)
    for cfg in chain:  # the first run from scratch; the chained ones share the adaptation steps
      if arm.lr is not None:
        cfg.optim.lr = arm.lr
      _scratch(cfg, budget, getattr(budget, arm.steps) if cfg is chain[-1]
               else budget.adapt_steps // max(1, len(chain) - 1))
      _data(cfg, budget, arm.detail)
      cfg.seed = seed
  else:
    if not base_checkpoint:
      raise ValueError(f"arm {arm.name} adapts {arm.base}: pass its export as base_checkpoint")
    c = method_config(arm.method)  # freeze rules and its own settings from the method
    c.base = None
    c.model.checkpoint = base_checkpoint
    c.optim.lr = 1e-4  # clipjax.config.adaptation_run
    c.batch_size = budget.batch_size
    c.total_steps = budget.adapt_steps
    c.optim.warmup_steps = max(1, budget.adapt_steps // 8)
    c.export.hf = False
  c.seed = seed
  _data(c, budget, arm.detail)
  tasks = arm.tasks or [name for name in task_names()
                        if (arm.probe or not get_task(name).probe)
                        and get_task(name).caption_detail != arm.detail]
  c.eval = eval_block(budget.eval_size, ",".join(tasks))  # text_pairs too
  for task in tasks:
    size = budget.probe_size if get_task(task).probe else budget.eval_size
    c.eval[task].source = dict(synthetic(size, get_task(task).split, budget.resolution),
                               caption_detail=arm.detail)
  c.eval.num_workers = budget.num_workers
  c.eval.plots = False  # the study draws its own plots over the seeds (study/report.py)
  c.checkpoint.every = 0  # the end of a run is saved; a killed run restarts from its start
  for dotted, value in arm.overrides:
    _set(c, dotted, value)
  return c

"""Evaluation tasks, registered by name (`config.eval.tasks`); one file per task."""
# Registration is the import; its order is the order of `eval.tasks` defaults and tables.
from clipjax.evaluate.tasks import retrieval  # noqa: F401
from clipjax.evaluate.tasks import zeroshot  # noqa: F401
from clipjax.evaluate.tasks import vqa  # noqa: F401
from clipjax.evaluate.tasks import text_pairs  # noqa: F401
from clipjax.evaluate.tasks import linear_probe  # noqa: F401
from clipjax.evaluate.tasks.base import (
  EvalRun,
  Task,
  eval_block,
  eval_options,
  eval_tasks,
  get_task,
  register,
  task_names,
)

__all__ = ["EvalRun", "Task", "eval_block", "eval_options", "eval_tasks", "get_task", "register", "task_names"]

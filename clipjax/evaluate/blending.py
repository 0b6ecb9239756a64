"""Embedding blending and weight-space blending (docs/methods.md §2, §3).

Embedding blending combines two text towers applied to the *same* text:
`normalise(β · n(T_orig(y)) + (1 − β) · n(T_adapted(y)))` — β = 1 is the original tower,
β = 0 the adapted one only ("only 3rd" in the thesis' tables). Weight blending (WiSE-FT)
interpolates parameters: `θ = β · θ_orig + (1 − β) · θ_adapted`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np

from clipjax.evaluate.embed import unit_rows as _unit

THESIS_BETAS = (1.0, 0.95, 0.9, 0.8, 0.6, 0.0)


def _check_beta(beta: float) -> None:
  if not 0.0 <= beta <= 1.0:
    raise ValueError(f"blending weight beta must be in [0, 1], got {beta}")


def blend_embeddings(original: np.ndarray, adapted: np.ndarray, beta: float) -> np.ndarray:
  """[N, D] blended unit embeddings of two towers' [N, D] embeddings of the same texts."""
  _check_beta(beta)
  if np.shape(original) != np.shape(adapted):
    raise ValueError(f"blended embeddings must have the same shape, got {np.shape(original)} "
                     f"and {np.shape(adapted)}")
  return _unit(beta * _unit(original) + (1.0 - beta) * _unit(adapted))


def blend_params(original: Any, adapted: Any, beta: float) -> Any:
  """WiSE-FT: leafwise β · original + (1 − β) · adapted (same tree structure and shapes)."""
  _check_beta(beta)
  if jax.tree.structure(original) != jax.tree.structure(adapted):
    raise ValueError("weight blending needs two parameter trees of the same model")

  def mix(path, a, b):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"weight blending: {jax.tree_util.keystr(path)} has shape {np.shape(a)} "
                       f"vs {np.shape(b)}")
    return (beta * a + (1.0 - beta) * b).astype(a.dtype)

  return jax.tree_util.tree_map_with_path(mix, original, adapted)


def beta_sweep(evaluate_fn: Callable[[float], dict[str, float]],
               betas: Sequence[float] = THESIS_BETAS) -> list[dict[str, float]]:
  """Rows `{"beta": β, **evaluate_fn(β)}` for each β, for the blending-ablation table."""
  return [{"beta": float(b), **evaluate_fn(float(b))} for b in betas]

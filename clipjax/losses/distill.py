"""Distillation from a frozen teacher (open_clip's `DistillClipLoss`, docs/methods.md §7c):
the CLIP loss of the student plus the cross-entropy of the student's logit rows to the
teacher's softmax rows, in both directions, over the global batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clipjax.losses.contrastive import HIGHEST, check_embeddings, clip_loss
from clipjax.losses.options import reads
from clipjax.parallel.collectives import AxisName, all_gather, psum


def _soft_row_cross_entropy(queries, keys, scale, teacher_queries, teacher_keys,
                            teacher_scale, axis_name: AxisName) -> jax.Array:
  """Σ over this device's query rows of −Σ_j softmax(t·Q'K'ᵀ)_ij log softmax(s·Q Kᵀ)_ij, the
  keys of the whole global batch (teacher rows carry no gradient)."""
  student = scale * jnp.dot(queries.astype(jnp.float32),
                            all_gather(keys, axis_name).astype(jnp.float32).T, precision=HIGHEST)
  teacher = jax.lax.stop_gradient(teacher_scale * jnp.dot(
      teacher_queries.astype(jnp.float32),
      all_gather(teacher_keys, axis_name).astype(jnp.float32).T, precision=HIGHEST))
  return -(jax.nn.softmax(teacher, axis=1) * jax.nn.log_softmax(student, axis=1)).sum()


@reads()  # the teacher's softmax rows would have to travel with the keys: not built
def distill_loss(image_emb: jax.Array, text_emb: jax.Array, logit_scale,
                 teacher_image_emb: jax.Array, teacher_text_emb: jax.Array, teacher_logit_scale,
                 *, axis_name: AxisName = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLIP(I, T) + ½(H(p_teacher(I→T), p(I→T)) + H(p_teacher(T→I), p(T→I))).

  image_emb, text_emb: [N, D] the student's, teacher_*: [N, D'] the teacher's (any width), all
  L2-normalised; the scales are multipliers (exp of the stored logit scales). The teacher
  side gets no gradient. Returns (loss, {"contrastive", "distill"}) (global values)."""
  n = check_embeddings(image_emb=image_emb, text_emb=text_emb)
  check_embeddings(teacher_image_emb=teacher_image_emb, teacher_text_emb=teacher_text_emb)
  if teacher_image_emb.shape[0] != n:
    raise ValueError(f"the teacher embedded {teacher_image_emb.shape[0]} samples, the student {n}")
  contrastive = clip_loss(image_emb, text_emb, logit_scale, axis_name=axis_name)
  scale = jnp.asarray(logit_scale, jnp.float32)
  t_scale = jnp.asarray(teacher_logit_scale, jnp.float32)
  per_image = _soft_row_cross_entropy(image_emb, text_emb, scale, teacher_image_emb,
                                      teacher_text_emb, t_scale, axis_name)
  per_text = _soft_row_cross_entropy(text_emb, image_emb, scale, teacher_text_emb,
                                     teacher_image_emb, t_scale, axis_name)
  distill = 0.5 * psum(per_image + per_text, axis_name) / psum(n, axis_name)
  return contrastive + distill, {"contrastive": contrastive, "distill": distill}

"""Evaluation on embeddings (any model) and on clipjax models: zero-shot classification,
retrieval, VQA-as-retrieval, blending, ANN search. `python -m clipjax.evaluate --config=...`."""
from clipjax.data.sources import VQAv1Source
from clipjax.evaluate.blending import beta_sweep, blend_embeddings, blend_params
from clipjax.evaluate.retrieval import retrieval_metrics, retrieval_ranks
from clipjax.evaluate.vqa import (
                                  normalize_answer,
                                  official_vqa_accuracy,
                                  vqa_accuracy,
                                  vqa_predict,
)
from clipjax.evaluate.zeroshot import (
                                  load_templates,
                                  standard_classnames,
                                  standard_templates,
                                  zero_shot_classifier,
                                  zero_shot_metrics,
)

__all__ = ["VQAv1Source", "beta_sweep", "blend_embeddings", "blend_params", "load_templates",
           "normalize_answer", "official_vqa_accuracy", "retrieval_metrics", "retrieval_ranks",
           "standard_classnames", "standard_templates", "vqa_accuracy", "vqa_predict",
           "zero_shot_classifier", "zero_shot_metrics"]

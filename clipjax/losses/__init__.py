"""Global-batch losses (docs/methods.md §1–7). Each is a function of embeddings usable on one device
with the whole batch, or per shard under `clipjax.parallel.mesh.on_mesh` (pass axis_name)."""
from clipjax.losses.contrastive import (
                                        clip_loss,
                                        draft_contrastive_loss,
                                        mult_loss,
                                        query_loss,
                                        siglip_loss,
                                        sigmoid_query_loss,
                                        text_infonce,
                                        three_tower_loss,
                                        unicl_loss,
)
from clipjax.losses.distill import distill_loss
from clipjax.losses.draft import draft_loss
from clipjax.losses.mmd import ESTIMATORS, MMDConfig, mmd2
from clipjax.losses.options import EXCHANGES, FORMS, LossOptions, unread

__all__ = ["ESTIMATORS", "EXCHANGES", "FORMS", "LossOptions", "MMDConfig", "unread", "clip_loss", "distill_loss", "draft_contrastive_loss", "draft_loss", "mmd2", "mult_loss",
           "query_loss", "sigmoid_query_loss", "siglip_loss", "text_infonce", "three_tower_loss",
           "unicl_loss"]

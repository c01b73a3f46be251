"""Prototype-based active data curation (CheXficient, METHODS 4.2-4.4), usable on its own.

- :mod:`.selection`: per-batch selection on joint embeddings (outlier / support / central bands,
  central thinned by farthest-point sampling);
- :mod:`.prototypes`: k-means initialisation and the Sinkhorn-Knopp EMA update;
- :mod:`.curator`: :class:`PrototypeCurator`, the state of one curation epoch (prototypes, kept ids),
  with rank 0 deciding under DDP;
- :mod:`.arithmetic`: the keep-ratio, learning-rate-horizon and compute-fraction figures of METHODS 4.3-4.4.
"""

from greenfm.curation.arithmetic import compute_fraction, keep_ratio_formula, scaled_max_per_cluster
from greenfm.curation.curator import PrototypeCurator
from greenfm.curation.prototypes import kmeans_prototypes, sinkhorn_update
from greenfm.curation.selection import Selection, select_batch

__all__ = ["PrototypeCurator", "Selection", "compute_fraction", "keep_ratio_formula", "kmeans_prototypes",
           "scaled_max_per_cluster", "select_batch", "sinkhorn_update"]

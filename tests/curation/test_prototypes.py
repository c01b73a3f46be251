"""Prototypes (METHODS 4.2 steps 1 and 3) and the curator over an epoch: k-means start, Sinkhorn-Knopp
EMA keeping unit norm, rare clusters over-represented in the kept set, state that survives a reload."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from synthetic import balanced_batch, directions, long_tailed

from greenfm.curation import PrototypeCurator, kmeans_prototypes, sinkhorn_update
from greenfm.curation.prototypes import sinkhorn
from greenfm.errors import ConfigError


def test_kmeans_finds_the_clusters_and_is_seeded():
    c, protos, _ = balanced_batch(240, noise=0.05)
    found, backend = kmeans_prototypes(c, 6)
    assert backend in ("scikit-learn",) or backend.startswith("faiss")
    assert torch.allclose(found.norm(dim=1), torch.ones(6), atol=1e-5)
    match = (found @ protos.t()).max(dim=0).values  # every true direction has a centroid near it
    assert (match > 0.99).all()
    again, _ = kmeans_prototypes(c, 6)
    assert torch.equal(found, again)


def test_kmeans_refuses_fewer_samples_than_prototypes_and_non_finite_values():
    c, _, _ = balanced_batch(4)
    with pytest.raises(ConfigError, match="at least 6 embeddings"):
        kmeans_prototypes(c, 6)
    c6, _, _ = balanced_batch(12)
    c6[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        kmeans_prototypes(c6, 6)


def test_sinkhorn_balances_and_updates_keep_unit_norm():
    c, protos, cluster = balanced_batch(120, noise=0.3, seed=7)
    q = sinkhorn(c @ protos.t(), epsilon=0.5, iterations=3)
    assert q.sum() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(q.sum(dim=0), torch.full((6,), 1 / 6), atol=1e-2)  # prototype marginals ~ 1/K
    p = F.normalize(protos + 0.3 * torch.randn(6, protos.shape[1], generator=torch.Generator().manual_seed(9)), dim=1)
    means = F.normalize(torch.stack([c[cluster == k].mean(0) for k in range(6)]), dim=1)
    before = (p * means).sum(1)
    for _ in range(30):
        p = sinkhorn_update(p, c)
        assert torch.allclose(p.norm(dim=1), torch.ones(6), atol=1e-5)
    assert ((p * means).sum(1) > before).all() and ((p * means).sum(1) > 0.85).all()  # towards the clusters' means
    assert torch.equal(sinkhorn_update(p, c[:0]), p)  # no kept row: unchanged


def _curate(c, ids, batch, **options):
    curator = PrototypeCurator(c.shape[1], **options)
    curator.initialize(c[:300], ids[:300])
    for start in range(0, len(ids), batch):
        curator.select(c[start : start + batch], ids[start : start + batch])
        curator.update()
        assert torch.allclose(curator.prototypes.norm(dim=1), torch.ones(curator.clusters), atol=1e-5)
    return curator


def test_rare_clusters_are_over_represented_in_the_kept_set():
    sizes = [500, 250, 120, 60, 30, 15]
    c, cluster = long_tailed(sizes)
    ids = torch.arange(len(cluster))
    curator = _curate(c, ids, 120, max_per_cluster=3)
    subset = torch.tensor(curator.finish())
    frequency = torch.bincount(cluster, minlength=6).float() / len(cluster)
    kept_share = torch.bincount(cluster[subset], minlength=6).float() / len(subset)
    assert len(subset) < 0.5 * len(cluster)
    rare, common = [4, 5], [0]
    assert kept_share[rare].sum() > 2 * frequency[rare].sum()
    assert kept_share[common].sum() < frequency[common].sum()


def test_decisions_are_staged_until_update_and_survive_a_reload():
    c, cluster = long_tailed([100, 100, 100])
    ids = torch.arange(300)
    curator = PrototypeCurator(c.shape[1], clusters=3, max_per_cluster=2)
    curator.initialize(c, ids)
    keep = curator.select(c[:60], ids[:60])
    assert not curator.kept  # a select without its optimiser step records nothing
    curator.update()
    assert curator.kept == set(ids[:60][keep].tolist())
    clone = PrototypeCurator(c.shape[1], clusters=3, max_per_cluster=2)
    clone.load_state_dict(curator.state_dict())
    assert clone.kept == curator.kept and torch.equal(clone.prototypes, curator.prototypes)
    assert torch.equal(clone.select(c[60:120], ids[60:120]), curator.select(c[60:120], ids[60:120]))


def test_selection_does_not_depend_on_row_order():
    c, protos, _ = balanced_batch(240, noise=0.2)
    ids = torch.arange(1000, 1240)
    curator = PrototypeCurator(c.shape[1])
    curator.prototypes.copy_(directions(6, c.shape[1]))
    curator.initialized.fill_(True)
    keep = curator.select(c, ids)
    perm = torch.randperm(240, generator=torch.Generator().manual_seed(0))
    assert torch.equal(curator.select(c[perm], ids[perm]), keep[perm])


def test_select_before_initialize_is_refused():
    with pytest.raises(ConfigError, match="before initialize"):
        PrototypeCurator(8).select(torch.randn(4, 8), torch.arange(4))

"""Per-batch selection (METHODS 4.2-4.3): the keep-ratio table, disjoint bands, thinning, small inputs."""

from __future__ import annotations

import pytest
import torch
from synthetic import balanced_batch

from greenfm.curation import keep_ratio_formula, scaled_max_per_cluster, select_batch
from greenfm.curation.selection import farthest_point_sampling
from greenfm.errors import ConfigError

# METHODS 4.3: B, formula (m = 10), exact (m = 10), scaled m, keep with scaled m
TABLE = [(32, 0.950, 0.8125, 1, 0.1875), (320, 0.2875, 0.28125, 7, 0.225), (480, 0.225, 0.225, 10, 0.225),
         (640, 0.194, 0.1875, 13, 0.216)]  # fmt: skip


@pytest.mark.parametrize("batch, formula, exact, scaled_m, scaled_keep", TABLE)
def test_keep_ratio_table(batch, formula, exact, scaled_m, scaled_keep):
    c, protos, cluster = balanced_batch(batch)
    chosen = select_batch(c, protos, max_per_cluster=10)
    assert torch.equal(chosen.cluster, cluster)  # the synthetic clusters are what the prototypes see
    assert keep_ratio_formula(batch, 10) == pytest.approx(formula, abs=6e-4)
    assert chosen.keep_ratio == pytest.approx(exact, abs=1e-6)
    assert scaled_max_per_cluster(batch) == scaled_m
    scaled = select_batch(c, protos, max_per_cluster=scaled_m)
    assert scaled.keep_ratio == pytest.approx(scaled_keep, abs=6e-4)


def test_480_keeps_4_outliers_8_support_10_central_per_cluster():
    c, protos, _ = balanced_batch(480)
    chosen = select_batch(c, protos, max_per_cluster=10)
    for k in range(6):
        rows = chosen.cluster == k
        assert int((chosen.outlier & rows).sum()) == 4
        assert int((chosen.support & rows).sum()) == 8
        assert int((chosen.kept & chosen.central & rows).sum()) == 10


@pytest.mark.parametrize("mode", ["fps", "density", "random"])
def test_bands_are_disjoint_cover_the_batch_and_thinning_respects_m(mode):
    c, protos, _ = balanced_batch(300, noise=0.2, seed=5)
    chosen = select_batch(c, protos, max_per_cluster=7, mode=mode, generator=torch.Generator().manual_seed(0))
    bands = torch.stack([chosen.outlier, chosen.support, chosen.central]).int()
    assert torch.equal(bands.sum(0), torch.ones(300, dtype=torch.int32))  # disjoint and covering
    assert not (chosen.kept & chosen.outlier).any()
    assert torch.equal(chosen.kept & chosen.support, chosen.support)  # support is kept whole
    per_cluster = torch.bincount(chosen.cluster[chosen.kept & chosen.central], minlength=6)
    assert (per_cluster <= 7).all() and (per_cluster == 7).all()


def test_farthest_point_sampling_spreads_out_more_than_random():
    g = torch.Generator().manual_seed(3)
    points = torch.randn(200, 8, generator=g)

    def spread(idx):
        d = torch.cdist(points[idx], points[idx])
        return float(d[~torch.eye(len(idx), dtype=torch.bool)].min())

    fps = farthest_point_sampling(points, 10, torch.Generator().manual_seed(0))
    assert len(set(fps.tolist())) == 10
    randoms = [spread(torch.randperm(200, generator=torch.Generator().manual_seed(s))[:10]) for s in range(20)]
    assert spread(fps) > max(randoms)


def test_small_clusters_have_no_support_band_and_singletons_are_kept():
    c, protos, _ = balanced_batch(6 * 5)  # 5 members per cluster: q85 and q95 fall between the same two
    chosen = select_batch(c, protos, max_per_cluster=10)
    assert not chosen.support.any()
    assert int(chosen.outlier.sum()) == 6 and int(chosen.kept.sum()) == 24
    single, protos1, _ = balanced_batch(1)
    assert select_batch(single, protos1, max_per_cluster=1).kept.tolist() == [True]


def test_a_batch_smaller_than_k_leaves_clusters_empty_and_still_selects():
    c, protos, _ = balanced_batch(4)  # K = 6
    chosen = select_batch(c, protos, max_per_cluster=1)
    assert chosen.kept.all() and chosen.cluster_counts(6)["members"] == [1, 1, 1, 1, 0, 0]


def test_bad_input_is_one_clear_error():
    c, protos, _ = balanced_batch(12)
    with pytest.raises(ConfigError, match="do not match"):
        select_batch(c[:, :5], protos, max_per_cluster=2)
    with pytest.raises(ConfigError, match="at least 1"):
        select_batch(c, protos, max_per_cluster=0)
    with pytest.raises(ConfigError, match="unknown thinning"):
        select_batch(c, protos, max_per_cluster=2, mode="median")

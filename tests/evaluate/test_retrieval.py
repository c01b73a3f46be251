"""Image-text retrieval: ranks by cosine, de-duplicated texts, honest random baselines, blockwise = whole."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest
import torch

from greenfm.errors import BadInputError
from greenfm.evaluate import retrieval
from greenfm.evaluate.image_text_results import write_retrieval_results
from greenfm.evaluate.retrieval import hit_chance, retrieval_metrics


def _recall(result, direction, k):
    return next(e for e in result[direction]["recall"] if e["k"] == k)


def _naive_ranks(images, texts_emb, texts):
    """Ranks from the full cosine matrix, duplicates merged by hand (pessimistic ties)."""
    unique = list(dict.fromkeys(texts))
    which = np.array([unique.index(t) for t in texts])
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    merged = unit(np.stack([unit(texts_emb)[which == u].mean(0) for u in range(len(unique))]))
    sim = unit(images) @ merged.T
    i2t = np.array([(sim[i] >= sim[i, which[i]]).sum() for i in range(len(texts))])
    t2i = []
    for u in range(len(unique)):
        carries = which == u
        best = sim[carries, u].max()
        t2i.append(1 + ((sim[:, u] >= best) & ~carries).sum())
    return i2t, np.array(t2i)


def test_identity_pairing_finds_every_pair_first():
    x = np.random.default_rng(0).normal(size=(300, 24))
    result = retrieval_metrics(x, x.copy(), [f"report {i}" for i in range(300)])
    for direction in ("image_to_text", "text_to_image"):
        assert _recall(result, direction, 1)["recall"] == 1.0
        assert result[direction]["mean_rank"] == 1.0 and result[direction]["median_rank"] == 1.0
    assert _recall(result, "image_to_text", 10)["random"] == pytest.approx(10 / 300)
    assert result["n_images"] == result["n_unique_texts"] == 300
    assert retrieval_metrics(torch.tensor(x), torch.tensor(x), [f"report {i}" for i in range(300)]) == result


def test_shuffled_pairing_sits_at_the_random_baseline():
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(size=(n, 64))
    result = retrieval_metrics(x, x[rng.permutation(n)], [f"r{i}" for i in range(n)])
    for direction in ("image_to_text", "text_to_image"):
        for k in (50, 100):
            entry = _recall(result, direction, k)
            assert entry["random"] == pytest.approx(k / n)
            sd = np.sqrt(entry["random"] * (1 - entry["random"]) / n)
            assert abs(entry["recall"] - entry["random"]) < 4 * sd
        assert abs(result[direction]["mean_rank"] - (n + 1) / 2) < 0.05 * n
        assert result[direction]["random_mean_rank"] == pytest.approx((n + 1) / 2)


def test_duplicate_texts_are_one_candidate_and_still_hit():
    rng = np.random.default_rng(2)
    texts = ["No acute findings."] * 5 + [f"Finding {i}." for i in range(20)]
    vocabulary = {t: rng.normal(size=16) for t in dict.fromkeys(texts)}
    text_emb = np.stack([vocabulary[t] for t in texts])
    images = text_emb + 0.05 * rng.normal(size=text_emb.shape)
    result = retrieval_metrics(images, text_emb, texts, ks=(1, 5))
    assert result["n_texts"] == 25 and result["n_unique_texts"] == 21
    i2t, t2i = result["image_to_text"], result["text_to_image"]
    assert i2t["n_candidates"] == 21 and t2i["n_queries"] == 21 and t2i["n_candidates"] == 25
    # every image of the duplicated report ranks that one entry first (five copies would push it to rank 5)
    assert _recall(result, "image_to_text", 1)["recall"] == 1.0
    assert _recall(result, "text_to_image", 1)["recall"] == 1.0
    assert _recall(result, "image_to_text", 5)["random"] == pytest.approx(5 / 21)
    expected = (1 - comb(20, 5) / comb(25, 5) + 20 * 5 / 25) / 21  # one text with 5 images, 20 with 1
    assert _recall(result, "text_to_image", 5)["random"] == pytest.approx(expected)


def test_ranks_equal_a_naive_full_matrix_with_duplicates_and_blocks(monkeypatch):
    rng = np.random.default_rng(3)
    texts = [f"t{i}" for i in rng.integers(0, 60, 150)]
    images, text_emb = rng.normal(size=(150, 8)), rng.normal(size=(150, 8))
    text_emb[[0, 1]] = text_emb[[0, 0]]
    i2t, t2i = _naive_ranks(images, text_emb, texts)
    whole = retrieval_metrics(images, text_emb, texts, ks=(1, 3, 10))
    monkeypatch.setattr(retrieval, "_BLOCK_ELEMENTS", 200)  # blocks of 1-2 rows / columns
    blocked = retrieval_metrics(images, text_emb, texts, ks=(1, 3, 10))
    monkeypatch.setattr(retrieval, "_NEAR_LIMIT", -1)  # text -> image by the second pass
    two_pass = retrieval_metrics(images, text_emb, texts, ks=(1, 3, 10))
    assert two_pass == blocked
    for result in (whole, blocked):
        for k in (1, 3, 10):
            assert _recall(result, "image_to_text", k)["recall"] == pytest.approx(np.mean(i2t <= k))
            assert _recall(result, "text_to_image", k)["recall"] == pytest.approx(np.mean(t2i <= k))
        assert result["image_to_text"]["mean_rank"] == pytest.approx(i2t.mean(), rel=1e-6)
        assert result["text_to_image"]["median_rank"] == pytest.approx(np.median(t2i))


def test_equal_vectors_score_equally_wherever_they_fall_in_the_product():
    # A float32 GEMM sums in a tile-dependent order (OpenBLAS's AVX2 kernel gave two values here)
    unit = retrieval._unit_rows(np.full((70, 384), 0.3), "x").astype(np.float64)
    assert len(np.unique(retrieval._similarities(unit, unit))) == 1


@pytest.mark.parametrize("near_limit", [4_000_000, -1])
def test_collapsed_embeddings_rank_last_not_first(monkeypatch, near_limit):
    monkeypatch.setattr(retrieval, "_NEAR_LIMIT", near_limit)
    collapsed = np.full((40, 384), 0.3) + np.random.default_rng(0).normal(0, 1e-9, (40, 384))  # float32: all equal
    result = retrieval_metrics(collapsed, collapsed[::-1], [f"r{i}" for i in range(40)], ks=(1, 40))
    assert _recall(result, "image_to_text", 1)["recall"] == 0.0
    assert result["image_to_text"]["mean_rank"] == 40.0 and result["text_to_image"]["mean_rank"] == 40.0


def test_near_ties_are_settled_exactly_on_the_products_ranked():
    rng = np.random.default_rng(6)
    base = rng.normal(size=(1, 256))
    # embeddings a hair apart: many rivals lie within the rounding margin of a text's best positive
    images, text_emb = base + 1e-4 * rng.normal(size=(120, 256)), base + 1e-4 * rng.normal(size=(120, 256))
    texts = [f"r{i}" for i in range(120)]
    unit_i, unit_t = (retrieval._unit_rows(x, n).astype(np.float64) for x, n in ((images, "i"), (text_emb, "t")))
    sim = retrieval._similarities(unit_i, unit_t)  # the product ranked on
    own = np.diag(sim)
    assert (np.abs(sim - own[None, :]) < 2 * retrieval._gamma(256)).sum() > 120  # near-ties do occur
    t2i = (sim >= own[None, :]).sum(0)  # counts the positive itself: 1-based
    i2t = (sim >= own[:, None]).sum(1)
    result = retrieval_metrics(images, text_emb, texts, ks=(1, 10))
    assert result["text_to_image"]["mean_rank"] == pytest.approx(t2i.mean())
    assert result["image_to_text"]["mean_rank"] == pytest.approx(i2t.mean())
    assert _recall(result, "text_to_image", 10)["recall"] == pytest.approx(np.mean(t2i <= 10))


def test_k_above_the_candidates_is_capped_and_flagged():
    x = np.random.default_rng(4).normal(size=(30, 8))
    texts = [f"r{i % 10}" for i in range(30)]
    result = retrieval_metrics(x, x, texts, ks=(5, 20, 100))
    i2t = {e["k"]: e for e in result["image_to_text"]["recall"]}
    t2i = {e["k"]: e for e in result["text_to_image"]["recall"]}
    assert i2t[20] == {**i2t[20], "k_used": 10, "capped": True, "recall": 1.0, "random": 1.0}
    assert not t2i[20]["capped"] and t2i[100]["capped"] and t2i[100]["k_used"] == 30
    assert not i2t[5]["capped"] and i2t[5]["random"] == pytest.approx(0.5)


def test_hit_chance_is_the_hypergeometric_complement():
    for n, m, k in [(10, 1, 3), (10, 4, 3), (10, 8, 3), (50, 7, 10), (5, 2, 9)]:
        exact = 1 - comb(n - m, min(k, n)) / comb(n, min(k, n))
        assert hit_chance(n, [m], k)[0] == pytest.approx(exact, abs=1e-12)


def test_bad_inputs_are_refused():
    x = np.zeros((3, 4))
    with pytest.raises(BadInputError, match="as many texts"):
        retrieval_metrics(x, x, ["a", "b"])
    with pytest.raises(BadInputError, match="dimensions"):
        retrieval_metrics(x, np.zeros((3, 5)), ["a", "b", "c"])
    with pytest.raises(BadInputError, match="positive"):
        retrieval_metrics(x, x, ["a", "b", "c"], ks=(0, 1))


def test_results_file_holds_the_result_and_references(tmp_path):
    x = np.random.default_rng(5).normal(size=(40, 8))
    result = retrieval_metrics(x, x, [f"r{i}" for i in range(40)], ks=(1, 5))
    path = write_retrieval_results(tmp_path, result, model_ref="runs/a", data_ref="manifest.csv",
                                   extra={"text_order": "findings+impression"})  # fmt: skip
    data = json.loads(path.read_text())
    assert path.name == "retrieval.json" and data["schema"] == "greenfm.retrieval/1"
    assert data["image_to_text"] == result["image_to_text"] and data["n_unique_texts"] == 40
    assert data["model"] == "runs/a" and data["extra"]["text_order"] == "findings+impression"
    with pytest.raises(BadInputError):
        write_retrieval_results(tmp_path, {"recall": 1})

"""Image-text retrieval: Recall@K, mean and median rank in both directions, beside a random baseline.

Both sides are L2-normalised and ranked by cosine similarity (METHODS.md 3.8, 4.5).
Identical report strings are one text: an image's text is the de-duplicated entry
it carries, so image -> text ranks ``U`` unique texts, and text -> image asks, for
each unique text, for the best rank among *all* images carrying it. A duplicated
text's embedding is the mean of its (normalised) copies, normalised again; a
deterministic text tower gives identical copies.

Ranks are 1-based and pessimistic on ties: a candidate scoring exactly as high as
the target ranks above it, so collapsed embeddings score worst, never best.

Random baselines, for a ranking drawn uniformly at random:

* image -> text, one correct text among ``U``: ``P(rank <= K) = K / U``; mean rank ``(U + 1) / 2``.
* text -> image, ``m`` correct images among ``N``: ``P(best rank <= K) = 1 - C(N - m, K) / C(N, K)``
  (hypergeometric: no positive among the top K), averaged over the unique texts;
  expected best rank ``(N + 1) / (m + 1)``.

A K above the number of candidates is capped to it and flagged (its recall is 1).
Similarities are one matrix product, computed in blocks of images, so 10,000 x 10,000
needs tens of MB, not 400; both directions read their ranks from it, so ties are
compared exactly (see ``_ranks``). The product is taken in float64 and rounded to
float32 (``_similarities``): a float32 GEMM sums in an order that depends on where a
pair falls in the kernel's tiles, so on some CPUs two copies of one vector scored
differently (0.99999845 and 1.0000007 with OpenBLAS's AVX2 kernel) and collapsed
embeddings were not tied; rounded from float64, equal vectors score equally. numpy's
BLAS is used (1.5x torch's on the 2-core AMD benchmark machine); torch tensors are
accepted as input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

from greenfm.errors import BadInputError
from greenfm.evaluate.zeroshot import as_matrix

DEFAULT_KS = (1, 5, 10, 50, 100)
# similarity entries per block: (block, candidates) float32 plus a comparison mask, ~50 MB
_BLOCK_ELEMENTS = 8_000_000
# near-ties kept for settling after the one pass; beyond this, a second pass is cheaper
_NEAR_LIMIT = 4_000_000


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    texts: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """Retrieval between N images and their N paired texts; a JSON-ready dict.

    Keys: ``n_images``, ``n_texts``, ``n_unique_texts``, ``ks``, ``similarity``,
    ``ties``, and per direction (``image_to_text``, ``text_to_image``): ``n_queries``,
    ``n_candidates``, ``recall`` (one ``{k, k_used, capped, recall, random}`` per K),
    ``mean_rank``, ``median_rank``, ``random_mean_rank``.
    """
    image = _unit_rows(image_emb, "image embeddings")
    text = _unit_rows(text_emb, "text embeddings")
    texts = [str(t) for t in texts]
    if not (len(image) == len(text) == len(texts)) or len(image) == 0:
        raise BadInputError(f"need as many texts as images (> 0): {len(image)} images, {len(text)} text "
                            f"embeddings, {len(texts)} texts")  # fmt: skip
    if image.shape[1] != text.shape[1]:
        raise BadInputError(f"image embeddings have {image.shape[1]} dimensions, text embeddings {text.shape[1]}")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise BadInputError(f"every K must be a positive integer, got {ks}")

    first: dict[str, int] = {}
    text_of_image = np.array([first.setdefault(t, len(first)) for t in texts], dtype=np.int64)
    n_images, n_unique = len(texts), len(first)
    unique_text = _merge_duplicates(text, text_of_image, n_unique)
    positives = np.bincount(text_of_image, minlength=n_unique)  # images carrying each unique text
    i2t, t2i = _ranks(image, unique_text, text_of_image)

    return {
        "n_images": n_images,
        "n_texts": len(texts),
        "n_unique_texts": n_unique,
        "ks": ks,
        "similarity": "cosine (both sides L2-normalised)",
        "ties": "pessimistic (a candidate tied with the target ranks above it)",
        "image_to_text": _direction(i2t, ks, n_unique, [k / n_unique for k in ks], (n_unique + 1) / 2),
        "text_to_image": _direction(
            t2i, ks, n_images, [float(np.mean(hit_chance(n_images, positives, k))) for k in ks],
            float(np.mean((n_images + 1) / (positives + 1))),
        ),  # fmt: skip
    }


def hit_chance(n: int, m: Any, k: int) -> np.ndarray:
    """P(at least one of ``m`` positives among the top ``k`` of ``n`` in random order) = 1 - C(n-m, k) / C(n, k)."""
    m = np.asarray(m, dtype=np.float64)
    k = min(k, n)
    miss = np.zeros_like(m)
    room = n - m >= k  # otherwise a positive is always in the top k
    rest = n - m[room]
    miss[room] = np.exp(gammaln(rest + 1) - gammaln(rest - k + 1) - gammaln(n + 1) + gammaln(n - k + 1))
    return 1.0 - miss


def _direction(ranks: np.ndarray, ks: list[int], n_candidates: int, random: list[float], random_mean: float):
    recall = [
        {"k": k, "k_used": min(k, n_candidates), "capped": k > n_candidates,
         "recall": float(np.mean(ranks <= k)), "random": min(1.0, float(chance))}
        for k, chance in zip(ks, random)
    ]  # fmt: skip
    return {
        "n_queries": int(len(ranks)),
        "n_candidates": int(n_candidates),
        "recall": recall,
        "mean_rank": float(ranks.mean()),
        "median_rank": float(np.median(ranks)),
        "random_mean_rank": float(random_mean),
    }


def _unit_rows(values: Any, name: str) -> np.ndarray:
    """A finite 2-D C-contiguous float32 array with unit-length rows (numpy, list or torch tensor)."""
    return _normalize(np.ascontiguousarray(as_matrix(values, name), dtype=np.float32))


def _normalize(array: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; an all-zero row stays zero (as ``torch.nn.functional.normalize``)."""
    return array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), np.float32(1e-12))


def _merge_duplicates(text: np.ndarray, text_of_image: np.ndarray, n_unique: int) -> np.ndarray:
    """(U, D) unit rows: the mean of each unique text's copies, normalised again."""
    if n_unique == len(text):
        return text  # first-occurrence order with no duplicates is the identity
    order = np.argsort(text_of_image, kind="stable")
    starts = np.searchsorted(text_of_image[order], np.arange(n_unique))
    return _normalize(np.add.reduceat(text[order], starts, axis=0))


def _ranks(image: np.ndarray, unique_text: np.ndarray, text_of_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image -> text ranks, text -> image ranks) from one pass of float32 similarity blocks.

    Image -> text reads each row's target from the row itself. Text -> image needs each
    text's best positive score before its rivals can be counted; a float64 estimate
    differs from the float32 products by at most ``2 gamma_D`` (the dot-product rounding
    bound for unit vectors), so rivals clearly above it are counted at once and the few
    within that margin are kept and settled against the exact best after the pass.
    Too many of them (collapsed embeddings) falls back to a second pass.
    """
    n_unique = len(unique_text)
    image, unique_text = image.astype(np.float64), unique_text.astype(np.float64)
    own64 = np.einsum("nd,nd->n", image, unique_text[text_of_image])
    estimate = np.full(n_unique, -np.inf)
    np.maximum.at(estimate, text_of_image, own64)
    margin = 2 * _gamma(image.shape[1]) + 1e-7  # + float64 -> float32 rounding of the bounds
    low, high = (estimate - margin).astype(np.float32), (estimate + margin).astype(np.float32)

    i2t = np.empty(len(image), dtype=np.int64)
    own = np.empty(len(image), dtype=np.float32)
    above = np.zeros(n_unique, dtype=np.int64)
    near_text, near_score, n_near = [], [], 0
    block = max(1, _BLOCK_ELEMENTS // n_unique)
    for lo in range(0, len(image), block):
        sim = _similarities(image[lo : lo + block], unique_text)  # (b, U)
        rows, target = np.arange(len(sim)), text_of_image[lo : lo + block]
        own[lo : lo + block] = sim[rows, target]  # same matrix: ties stay exact
        i2t[lo : lo + block] = np.count_nonzero(sim >= own[lo : lo + block, None], axis=1)  # 1-based
        if n_near > _NEAR_LIMIT:
            continue  # text -> image goes to the second pass
        sim[rows, target] = -np.inf  # an image is a positive of its own text, never its rival
        at_least_high = sim >= high
        above += np.count_nonzero(at_least_high, axis=0)
        r, c = np.nonzero((sim >= low) & ~at_least_high)
        near_text.append(c)
        near_score.append(sim[r, c])
        n_near += len(c)
    if n_near > _NEAR_LIMIT:
        return i2t, _text_to_image_ranks(image, unique_text, text_of_image)
    best = np.full(n_unique, -np.inf, dtype=np.float32)
    np.maximum.at(best, text_of_image, own)
    near_text, near_score = np.concatenate(near_text), np.concatenate(near_score)
    settled = np.bincount(near_text[near_score >= best[near_text]], minlength=n_unique)
    return i2t, 1 + above + settled


def _similarities(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``rows @ columns.T`` (both float64) rounded to float32: equal pairs give equal scores on any BLAS kernel."""
    return (rows @ columns.T).astype(np.float32)


def _gamma(n: int) -> float:
    """gamma_n = n u / (1 - n u), u = 2^-24: the relative rounding bound of an n-term float32 dot product."""
    nu = n * 2.0**-24
    return nu / (1 - nu)


def _text_to_image_ranks(image: np.ndarray, unique_text: np.ndarray, text_of_image: np.ndarray) -> np.ndarray:
    """Per unique text, the best rank among the images carrying it (1 + other images at least as high).

    The second pass of ``_ranks`` when near-ties are too many: blocks of texts, each
    text's positives and rivals read from the same matrix.
    """
    n_unique = len(unique_text)
    order = np.argsort(text_of_image, kind="stable")  # images grouped by their text
    sorted_text = text_of_image[order]
    ranks = np.empty(n_unique, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // len(image))
    for lo in range(0, n_unique, block):
        hi = min(lo + block, n_unique)
        sim = _similarities(unique_text[lo:hi], image)  # (b, N): one row per text
        a, b = np.searchsorted(sorted_text, [lo, hi])
        rows, images = sorted_text[a:b] - lo, order[a:b]
        own = sim[rows, images]  # every (text, image carrying it) score
        best = np.full(hi - lo, -np.inf, dtype=sim.dtype)
        np.maximum.at(best, rows, own)
        at_least = np.count_nonzero(sim >= best[:, None], axis=1)
        positives_at_least = np.bincount(rows[own >= best[rows]], minlength=hi - lo)
        ranks[lo:hi] = 1 + at_least - positives_at_least
    return ranks

"""A small synthetic dataset with a planted input-aware effect.

The ground truth is itself an IFM (Eq. 7 of the paper): every feature has a weight
w_f and a factor v_f, and in each instance field i's feature is rescaled by
m_i(x) = h * softmax_i(g(x)), where g_i(x) = sum over the *other* fields j of s[i, x_j]
(a fixed random table). So how much a feature counts depends on what it co-occurs with.
That makes the target a function of all h features jointly, which no model of pairwise
interactions (an FM of any rank) can represent; an IFM can, because its FEN sees the
whole instance. With the default strength the best second-order fit still leaves a
large part of the variance unexplained (see tests/test_data.py).
"""
from __future__ import annotations

import numpy as np

__all__ = ["make_synthetic", "SYNTHETIC_DEFAULTS"]

SYNTHETIC_DEFAULTS = dict(n=20_000, num_fields=5, vocab_per_field=40, noise=0.1,
                          seed=0, rank=4, strength=1.0)


def make_synthetic(n: int = 20_000, num_fields: int = 5, vocab_per_field: int = 40,
                   noise: float = 0.1, seed: int = 0, rank: int = 4,
                   strength: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return ``(x int64 [n, h], y float32 [n], params)``.

    ``strength`` is the spread of the input-aware logits: 0 gives m = 1 everywhere (a
    plain FM ground truth), 1 makes factors range from ~0.01 to ~4. The noiseless
    target is standardised to mean 0, variance 1, then Gaussian noise of std ``noise``
    is added, so ``noise`` is the RMSE of a perfect model. Deterministic in ``seed``.
    """
    h, vocab = num_fields, num_fields * vocab_per_field
    if h < 2 or vocab_per_field < 2 or n < 10:
        raise ValueError("synthetic data needs num_fields >= 2, vocab_per_field >= 2, n >= 10")
    rng = np.random.default_rng(seed)
    # Field j owns ids [j * vocab_per_field, (j + 1) * vocab_per_field): column j = field j.
    x = rng.integers(0, vocab_per_field, size=(n, h)) + np.arange(h) * vocab_per_field
    w = rng.normal(0.0, 1.0, vocab)
    v = rng.normal(0.0, 1.0 / np.sqrt(rank), (vocab, rank))
    s = rng.normal(0.0, strength, (h, vocab))  # s[i, f]: how feature f moves field i's factor
    # g_i = sum_{j != i} s[i, x_j]: all fields' contributions minus field i's own.
    contrib = s[:, x].transpose(1, 0, 2)                    # [n, i, j] = s[i, x_j]
    g = contrib.sum(axis=2) - np.einsum("nii->ni", contrib)
    g -= g.max(axis=1, keepdims=True)
    m = h * np.exp(g) / np.exp(g).sum(axis=1, keepdims=True)
    e = m[..., None] * v[x]                                 # input-aware factors m_i v_{x_i}
    pairwise = 0.5 * (e.sum(axis=1) ** 2 - (e ** 2).sum(axis=1)).sum(axis=1)
    f = (m * w[x]).sum(axis=1) + pairwise
    f = (f - f.mean()) / f.std()
    y = f + noise * rng.normal(size=n)
    params = dict(n=n, num_fields=h, vocab_per_field=vocab_per_field, noise=noise,
                  seed=seed, rank=rank, strength=strength,
                  factor_percentiles_5_50_95=[round(float(q), 4) for q in np.percentile(m, [5, 50, 95])])
    return x.astype(np.int64), y.astype(np.float32), params

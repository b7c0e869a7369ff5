"""The branch-and-bound pool of open domains (issue 12): removing a batch and appending children in place keeps
exactly the domains that should be there, every field of a domain staying together."""

from __future__ import annotations

import numpy as np

from patchlang.compile.bab_tree import _Pool


def pool_of(ids: np.ndarray, K: int = 2, sizes=(3, 5)) -> _Pool:
    """Domains whose every field encodes its id, so a mixed-up row is visible."""
    n = ids.size
    f = ids.astype(float)
    return _Pool(lower=[np.repeat(f[:, None], s, 1) for s in sizes],
                 upper=[np.repeat(f[:, None] + 1, s, 1) for s in sizes],
                 alpha=[np.broadcast_to(f[:, None, None], (n, K, s)).astype(np.float32) for s in sizes],
                 phase=[np.repeat((ids % 3 - 1).astype(np.int8)[:, None], s, 1) for s in sizes],
                 beta=[np.broadcast_to(-f[:, None, None], (n, K, s)).astype(np.float32) for s in sizes],
                 lb=np.repeat(f[:, None], K, 1), score=f.copy(), depth=ids.astype(np.int64),
                 split=np.stack([ids, 2 * ids], axis=1).astype(np.int64))


def check(pool: _Pool, expected: set[int]) -> None:
    ids = pool.depth
    assert sorted(ids.tolist()) == sorted(expected)
    f = ids.astype(float)
    assert np.array_equal(pool.score, f) and np.array_equal(pool.lb[:, 0], f)
    for k in range(2):
        assert np.all(pool.lower[k] == f[:, None]) and np.all(pool.upper[k] == f[:, None] + 1)
        assert np.all(pool.alpha[k] == f[:, None, None]) and np.all(pool.beta[k] == -f[:, None, None])
        assert np.all(pool.phase[k] == (ids % 3 - 1)[:, None])
    assert np.array_equal(pool.split, np.stack([ids, 2 * ids], axis=1))


def test_remove_and_extend_keep_each_domain_whole():
    rng = np.random.default_rng(0)
    pool = pool_of(np.arange(10))
    live, next_id = set(range(10)), 10
    for step in range(60):
        n = int(rng.integers(0, pool.size + 1))
        pick = rng.choice(pool.size, n, replace=False)
        taken = pool.take(pick)
        assert set(taken.depth.tolist()) == {int(pool.depth[i]) for i in pick}
        pool.remove(pick)
        live -= set(taken.depth.tolist())
        check(pool, live)
        m = int(rng.integers(0, 40))
        pool.extend(pool_of(np.arange(next_id, next_id + m)))
        live |= set(range(next_id, next_id + m))
        next_id += m
        check(pool, live)


def test_removing_everything_then_refilling():
    pool = pool_of(np.arange(5))
    pool.remove(np.arange(5)[::-1].copy())
    assert pool.size == 0
    pool.extend(pool_of(np.arange(7, 9)))
    check(pool, {7, 8})

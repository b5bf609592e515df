"""Thread safety: many Python threads at once, and the GIL released while batches run."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import popo_verify
from conftest import PAIRS, read_math500

THREADS = 8


def _cheap_pairs():
    # Without the factorial pair, which takes milliseconds (exact big rationals).
    return [(g, r) for g, r, _ in PAIRS if "!" not in g]


def _workload(math500=None):
    pairs = [(g, r) for g, r, _ in PAIRS] + _cheap_pairs() * 40
    if math500:
        pairs += popo_verify.benchmark_pairs(math500)
    return pairs


def _run_in_threads(fn, n=THREADS):
    """Run fn(i) in n threads released together; every result, and every exception."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - a failure of any kind is what we count
            errors.append(repr(e))

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_verify_from_8_threads_at_once():
    # The built-in pairs, plus the 2,000 MATH500 benchmark pairs when the data is there.
    pairs = _workload(read_math500())
    expected = [popo_verify.verify(g, r) for g, r in pairs]

    def one_thread(i):
        # Each thread walks the pairs from its own offset so that threads are on different
        # pairs at any moment.
        k = (i * len(pairs)) // THREADS
        order = list(range(k, len(pairs))) + list(range(k))
        got = [None] * len(pairs)
        for j in order:
            got[j] = popo_verify.verify(*pairs[j])
        return got

    results, errors = _run_in_threads(one_thread)
    assert errors == []
    failures = sum(got != expected for got in results)
    wrong = sum(a != b for got in results for a, b in zip(got, expected))
    assert (failures, wrong) == (0, 0)


def test_batches_and_adapters_from_8_threads_at_once():
    pairs = _workload()
    golds = [g for g, _ in pairs]
    responses = [r for _, r in pairs]
    expected = popo_verify.verify_batch(golds, responses, 1)

    def one_thread(i):
        threads = [None, 1, 2, 4][i % 4]
        return popo_verify.verify_batch(golds, responses, threads)

    results, errors = _run_in_threads(one_thread)
    assert errors == []
    assert all(r == expected for r in results)

    from popo_verify.verl import compute_score

    with ThreadPoolExecutor(THREADS) as pool:
        scores = list(pool.map(lambda p: compute_score("math", p[1], p[0]), pairs))
    assert scores == [1.0 if ok else 0.0 for ok in expected]


def _largest_gap(fn):
    """Run fn() in a thread while this one keeps running Python; the call's duration and the
    longest stretch of it during which this thread could not run (it needs the GIL to)."""
    span = {}

    def worker():
        span["start"] = time.perf_counter()
        fn()
        span["end"] = time.perf_counter()

    t = threading.Thread(target=worker)
    ticks = []
    t.start()
    while t.is_alive():
        ticks.append(time.perf_counter())
    t.join()
    inside = [span["start"]] + [x for x in ticks if span["start"] < x < span["end"]] + [span["end"]]
    return span["end"] - span["start"], max(b - a for a, b in zip(inside, inside[1:]))


def test_verify_batch_releases_the_gil():
    pairs = _cheap_pairs() * 6000
    golds = [g for g, _ in pairs]
    responses = [r for _, r in pairs]
    duration, gap = _largest_gap(lambda: popo_verify.verify_batch(golds, responses, 1))
    # Holding the GIL for the call would stop this thread for all of it (gap == duration).
    assert duration > 0.02
    assert gap < 0.5 * duration, (gap, duration)

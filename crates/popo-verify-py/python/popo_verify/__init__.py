"""popo-verify: fast, thread-safe math answer verification for RL rewards and benchmarks.

The verifier of the popo trainer (Rust), as a Python package::

    import popo_verify

    v = popo_verify.verify("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$.")
    v.correct, v.pred_answer, v.reason             # (True, '0.5', 'exact')
    popo_verify.verify_batch(golds, responses)     # list[bool], GIL released, every core

Drop-in rewards: ``popo_verify.trl.accuracy_reward`` (TRL's ``GRPOTrainer``) and
``popo_verify.verl.compute_score`` (verl's ``custom_reward_function``).

No timers and no signals: it is safe in any thread (Ray workers included), and every pair has a
deterministic work bound.
"""

from popo_verify._popo_verify import (
    DEFAULT_ORDER,
    InternalError,
    Verdict,
    __version__,
    benchmark_pairs,
    equivalent,
    extract,
    verify,
    verify_batch,
    verify_batch_verdicts,
)

__all__ = [
    "DEFAULT_ORDER",
    "InternalError",
    "Verdict",
    "__version__",
    "benchmark_pairs",
    "equivalent",
    "extract",
    "verify",
    "verify_batch",
    "verify_batch_verdicts",
]

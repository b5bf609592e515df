"""popo-verify as a verl custom reward function.

verl loads a reward function from a file path and calls it once per response as
``compute_score(data_source, solution_str, ground_truth, extra_info)``, expecting a float.
This module is such a file. Point verl at it::

    # the path of this file:
    python -c "import popo_verify.verl as m; print(m.__file__)"

    python -m verl.trainer.main_ppo ... \\
        custom_reward_function.path=/path/to/site-packages/popo_verify/verl.py \\
        custom_reward_function.name=compute_score

or, as YAML, ``custom_reward_function: {path: ..., name: compute_score}``. A two-line file of
your own works the same way (``from popo_verify.verl import compute_score``). With verl's
batch reward manager (``reward_model.reward_manager=batch``) use ``name=compute_score_batch``.
Options (``extract_gold``, ``literal_numbers``, ``order``) go in
``custom_reward_function.reward_kwargs``. ``literal_numbers`` is on here (off in
``popo_verify.verify``): a number gold takes only a number written out, so a policy cannot
earn the reward by restating the question's sum (``24 + 65 + 34`` for 123).

The score is 1.0 for a correct response and 0.0 otherwise, for every ``data_source``. There is
no ``signal.alarm`` timeout, so it works in Ray workers and any other thread.
"""

# Absolute imports only: verl executes this file as a stand-alone module ("custom_module").
from typing import Any, List, Optional, Sequence

import popo_verify

__all__ = ["compute_score", "compute_score_batch"]


def _gold(ground_truth: Any) -> str:
    if isinstance(ground_truth, str):
        return ground_truth
    if isinstance(ground_truth, (int, float)) and not isinstance(ground_truth, bool):
        return str(ground_truth)
    raise TypeError(
        "popo_verify.verl: ground_truth must be a str (the reference answer) or a number, "
        f"not {type(ground_truth).__name__}: check reward_model.ground_truth in the dataset"
    )


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: Optional[dict] = None,
    *,
    extract_gold: bool = True,
    literal_numbers: bool = True,
    order: Optional[Sequence[str]] = None,
    **kwargs: Any,
) -> float:
    """verl reward: 1.0 if ``solution_str`` answers ``ground_truth`` correctly, else 0.0.

    ``data_source`` and ``extra_info`` are accepted and ignored, as are unknown keyword
    arguments (verl may add some). Config::

        custom_reward_function.path=<popo_verify/verl.py> custom_reward_function.name=compute_score
    """
    v = popo_verify.verify(
        _gold(ground_truth),
        solution_str,
        extract_gold=extract_gold,
        literal_numbers=literal_numbers,
        order=order,
    )
    return 1.0 if v.correct else 0.0


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Optional[Sequence[Any]] = None,
    *,
    extract_gold: bool = True,
    literal_numbers: bool = True,
    order: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    **kwargs: Any,
) -> List[float]:
    """``compute_score`` for verl's batch reward manager: one float per response, in order,
    verified on every core with the GIL released. Config::

        reward_model.reward_manager=batch
        custom_reward_function.path=<popo_verify/verl.py> custom_reward_function.name=compute_score_batch
    """
    golds = [_gold(g) for g in ground_truths]
    verdicts = popo_verify.verify_batch(
        golds,
        list(solution_strs),
        threads,
        extract_gold=extract_gold,
        literal_numbers=literal_numbers,
        order=order,
    )
    return [1.0 if ok else 0.0 for ok in verdicts]

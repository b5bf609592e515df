"""The TRL and verl adapters, called the way those libraries call reward functions.

TRL and verl are not installed: the calls below follow their documented conventions.
TRL (GRPOTrainer): ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)``
with every other dataset column as a list (one entry per completion), plus extras such as
``trainer_state``; it wants one float (or None) per completion and logs ``__name__``.
verl: loads ``custom_reward_function.path`` as a stand-alone module, and calls
``compute_score(data_source=, solution_str=, ground_truth=, extra_info=)`` with the
``reward_kwargs`` merged in; the batch manager calls ``compute_score(data_sources=,
solution_strs=, ground_truths=, extra_infos=)``.
"""

import importlib.util
import inspect
import math
import pickle
import sys
from pathlib import Path

import pytest

import popo_verify
import popo_verify.trl as ptrl
import popo_verify.verl as pverl
from popo_verify.trl import accuracy_reward, completion_text, make_accuracy_reward
from conftest import PAIRS

GOLDS = [g for g, _, _ in PAIRS]
TEXTS = [r for _, r, _ in PAIRS]
EXPECTED = [1.0 if c else 0.0 for _, _, c in PAIRS]


def trl_call(func, prompts, completions, **columns):
    """As GRPOTrainer._calculate_rewards calls a reward function."""
    out = func(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2, 3]] * len(completions),
        trainer_state=object(),
        **columns,
    )
    assert isinstance(out, list) and len(out) == len(completions)
    assert all(x is None or type(x) is float for x in out)
    return out


# --- TRL -------------------------------------------------------------------------------------


def test_trl_signature_follows_the_convention():
    for func in (accuracy_reward, make_accuracy_reward("solution")):
        params = inspect.signature(func).parameters
        assert list(params)[:2] == ["prompts", "completions"]
        assert list(params.values())[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert accuracy_reward.__name__ == "accuracy_reward"
    assert make_accuracy_reward(name="math_acc").__name__ == "math_acc"
    assert "GRPOTrainer" in ptrl.__doc__ and "reward_funcs=[accuracy_reward]" in ptrl.__doc__


def test_trl_standard_format():
    prompts = [f"Problem {i}" for i in range(len(TEXTS))]
    out = trl_call(accuracy_reward, prompts, TEXTS, answer=GOLDS, level=[3] * len(TEXTS))
    assert out == EXPECTED
    # Positional use, as a user testing it by hand would.
    assert accuracy_reward(prompts, TEXTS, answer=GOLDS) == EXPECTED


def test_trl_conversational_format_grades_the_last_assistant_turn():
    prompts = [[{"role": "user", "content": "What is 2+3?"}]] * 4
    completions = [
        [{"role": "assistant", "content": "2+3 = \\boxed{5}"}],
        [{"role": "assistant", "content": "\\boxed{6}"}],
        # A tool call and its result, then the final assistant turn.
        [
            {"role": "assistant", "content": "Let me compute: \\boxed{4}"},
            {"role": "tool", "content": "5"},
            {"role": "assistant", "content": "So it is \\boxed{5}."},
        ],
        # Content as a list of parts.
        [{"role": "assistant", "content": [{"type": "text", "text": "The answer is \\boxed{5}"}]}],
    ]
    out = trl_call(accuracy_reward, prompts, completions, answer=["5"] * 4)
    assert out == [1.0, 0.0, 1.0, 1.0]


def test_completion_text():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]) == "a"
    assert completion_text([{"content": "no role"}]) == "no role"
    assert completion_text([{"role": "user", "content": "only the user"}]) == ""
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    assert completion_text({"role": "assistant", "content": "one message"}) == "one message"
    with pytest.raises(TypeError, match="str or a list of message dicts"):
        completion_text(5)
    with pytest.raises(TypeError, match="list of message dicts"):
        completion_text(["not a dict"])


def test_trl_gold_column_solution_and_options():
    solutions = ["We add: $2+3=\\boxed{5}$.", "Hence \\boxed{\\frac{1}{2}}."]
    reward = make_accuracy_reward(answer_column="solution")
    out = trl_call(reward, ["p", "q"], ["\\boxed{5}", "It is 0.5, so \\boxed{0.5}"], solution=solutions)
    assert out == [1.0, 1.0]
    whole = make_accuracy_reward(answer_column="solution", extract_gold=False)
    assert trl_call(whole, ["p"], ["\\boxed{5}"], solution=solutions[:1]) == [0.0]
    ordered = make_accuracy_reward(order=["last_number"], threads=1, correct=2.0, incorrect=-1.0)
    text = "The answer is 4. Then 5"
    assert trl_call(ordered, ["p", "q"], [text, text], answer=["5", "4"]) == [2.0, -1.0]


def test_rewards_refuse_a_restated_sum_by_default():
    # A reward is optimized: restating the question's sum must not earn it (literal_numbers on).
    restated = "24 + 65 + 34 = \\boxed{24 + 65 + 34}"
    reward = make_accuracy_reward()
    assert trl_call(reward, ["p", "q"], [restated, "\\boxed{123}"], answer=["123", "123"]) == [0.0, 1.0]
    by_value = make_accuracy_reward(literal_numbers=False)
    assert trl_call(by_value, ["p"], [restated], answer=["123"]) == [1.0]
    assert pverl.compute_score("math", restated, "123") == 0.0
    assert pverl.compute_score("math", restated, "123", literal_numbers=False) == 1.0
    batch = pverl.compute_score_batch(["m", "m"], [restated, "\\boxed{123}"], ["123", "123"])
    assert batch == [0.0, 1.0]


def test_trl_gold_values():
    # None: not applicable (TRL turns it into NaN and ignores it); numbers are read as text.
    out = trl_call(accuracy_reward, ["p"] * 3, ["\\boxed{4}", "#### 72", "\\boxed{2.5}"], answer=[None, 72, 2.5])
    assert out == [None, 1.0, 1.0]
    assert trl_call(accuracy_reward, [], [], answer=[]) == []
    with pytest.raises(TypeError, match="row 0"):
        accuracy_reward(["p"], ["\\boxed{1}"], answer=[["1"]])


def test_trl_errors_name_the_problem():
    with pytest.raises(KeyError, match="no dataset column 'answer'.*answer_column='solution'"):
        accuracy_reward(["p"], ["\\boxed{1}"], solution=["1"])
    with pytest.raises(ValueError, match="one gold per completion"):
        accuracy_reward(["p", "q"], ["\\boxed{1}", "\\boxed{2}"], answer=["1"])
    with pytest.raises(TypeError, match="completions="):
        accuracy_reward(prompts=["p"], answer=["1"])
    with pytest.raises(ValueError, match="unknown variant"):
        make_accuracy_reward(order=["boxd"])
    with pytest.raises(ValueError, match="threads"):
        make_accuracy_reward(threads=0)


def test_trl_reward_pickles():
    assert pickle.loads(pickle.dumps(accuracy_reward)) is accuracy_reward


# --- verl ------------------------------------------------------------------------------------


def test_verl_signature_follows_the_convention():
    params = inspect.signature(pverl.compute_score).parameters
    assert list(params)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert params["extra_info"].default is None
    batch = inspect.signature(pverl.compute_score_batch).parameters
    assert list(batch)[:4] == ["data_sources", "solution_strs", "ground_truths", "extra_infos"]
    assert "custom_reward_function.name=compute_score" in pverl.__doc__


def test_verl_compute_score_as_the_reward_manager_calls_it():
    for gold, text, ok in PAIRS:
        score = pverl.compute_score(
            data_source="lighteval/MATH", solution_str=text, ground_truth=gold, extra_info={"index": 0}
        )
        assert type(score) is float and score == (1.0 if ok else 0.0)
    assert pverl.compute_score("openai/gsm8k", "#### 18", "18") == 1.0
    assert pverl.compute_score("openai/gsm8k", "#### 18", 18) == 1.0


def test_verl_reward_kwargs_are_merged_in():
    text = "The answer is 4. Then 5"
    # verl merges custom_reward_function.reward_kwargs into the call; unknown ones are ignored.
    assert pverl.compute_score("math", text, "5", None, order=["last_number"], something_new=1) == 1.0
    assert pverl.compute_score("math", text, "5", None) == 0.0
    assert pverl.compute_score("math", "\\boxed{5}", "so \\boxed{5}", extract_gold=False) == 0.0


def test_verl_batch_manager_call():
    scores = pverl.compute_score_batch(
        data_sources=["math"] * len(TEXTS),
        solution_strs=TEXTS,
        ground_truths=GOLDS,
        extra_infos=[None] * len(TEXTS),
    )
    assert scores == EXPECTED and all(type(s) is float for s in scores)


def test_verl_bad_ground_truth_is_a_clear_error():
    with pytest.raises(TypeError, match="ground_truth must be a str"):
        pverl.compute_score("math", "\\boxed{1}", None)
    with pytest.raises(TypeError, match="ground_truth must be a str"):
        pverl.compute_score_batch(["math"], ["\\boxed{1}"], [{"answer": "1"}])


def test_verl_loads_the_file_as_verl_does():
    # verl's get_custom_reward_fn: spec_from_file_location("custom_module", path), exec, getattr.
    path = Path(pverl.__file__)
    spec = importlib.util.spec_from_file_location("custom_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_module"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["custom_module"]
    fn = getattr(module, "compute_score")
    assert fn(data_source="x", solution_str="\\boxed{\\frac{1}{2}}", ground_truth="0.5", extra_info=None) == 1.0
    batch = getattr(module, "compute_score_batch")
    assert batch(data_sources=["x"], solution_strs=["\\boxed{3}"], ground_truths=["3"], extra_infos=[None]) == [1.0]


def test_rewards_are_finite_numbers():
    out = trl_call(accuracy_reward, ["p"] * len(TEXTS), TEXTS, answer=GOLDS)
    assert all(math.isfinite(x) for x in out)
    assert popo_verify.verify_batch(GOLDS, TEXTS) == [x == 1.0 for x in out]

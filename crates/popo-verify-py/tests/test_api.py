"""The module's functions: results, argument handling, errors."""

import pickle

import pytest

import popo_verify
from popo_verify import Verdict
from conftest import PAIRS


def test_verify_gives_a_verdict_with_the_answers_and_a_reason():
    v = popo_verify.verify("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$.")
    assert isinstance(v, Verdict)
    assert v.correct is True
    assert v.gold_answer == "1/2"
    assert v.pred_answer == "0.5"
    assert v.reason == "exact"
    assert bool(v) is True

    w = popo_verify.verify("5", "I could not solve it.")
    assert not w.correct and not w
    assert w.pred_answer is None
    assert w.reason == "no answer found"


@pytest.mark.parametrize("gold,response,correct", PAIRS)
def test_verify_on_known_pairs(gold, response, correct):
    assert popo_verify.verify(gold, response).correct is correct


def test_verdict_repr_is_readable_and_evaluates_back():
    v = popo_verify.verify("\\frac{\\sqrt{3}}{2}", "$\\boxed{\\dfrac{\\sqrt3}{2}}$")
    r = repr(v)
    assert r.startswith("Verdict(correct=True, gold_answer=")
    assert "reason=" in r
    assert eval(r, {"Verdict": Verdict}) == v
    none = popo_verify.verify("1", "nothing")
    assert "pred_answer=None" in repr(none)


def test_verdict_is_a_frozen_value():
    v = popo_verify.verify("2", "\\boxed{2}")
    with pytest.raises(AttributeError):
        v.correct = False
    assert v == popo_verify.verify("2", "\\boxed{2}")
    assert v != popo_verify.verify("2", "\\boxed{3}")
    assert pickle.loads(pickle.dumps(v)) == v
    assert v.to_dict() == {
        "correct": True,
        "gold_answer": v.gold_answer,
        "pred_answer": v.pred_answer,
        "reason": v.reason,
    }
    assert Verdict(False) == Verdict(False, None, None, "")


def test_extract_gold_reads_a_worked_solution_or_compares_whole():
    solution = "Adding, we get $2 + 3 = \\boxed{5}$."
    assert popo_verify.verify(solution, "\\boxed{5}").correct
    assert not popo_verify.verify(solution, "\\boxed{5}", extract_gold=False).correct
    assert popo_verify.verify("5", "\\boxed{5}", extract_gold=False).correct


def test_literal_numbers_refuses_an_expression_for_a_number():
    # The library's default follows math-verify: any expression of the gold's value counts.
    restated = "So the sum is \\boxed{24 + 65 + 34}."
    assert popo_verify.verify("123", restated).correct
    assert not popo_verify.verify("123", restated, literal_numbers=True).correct
    for written in ["\\boxed{123}", "The answer is 123.", "\\boxed{x = 123}", "\\boxed{123.0}"]:
        assert popo_verify.verify("123", written, literal_numbers=True).correct, written
    assert popo_verify.verify("3/4", "\\boxed{\\frac{3}{4}}", literal_numbers=True).correct
    golds, responses = ["123", "123", "7"], [restated, "\\boxed{123}", "\\boxed{3 + 4}"]
    assert popo_verify.verify_batch(golds, responses) == [True, True, True]
    assert popo_verify.verify_batch(golds, responses, literal_numbers=True) == [False, True, False]
    verdicts = popo_verify.verify_batch_verdicts(golds, responses, 1, literal_numbers=True)
    assert [v.correct for v in verdicts] == [False, True, False]


def test_extract_and_its_order():
    assert popo_verify.DEFAULT_ORDER[0] == "boxed"
    assert "last_candidate" in popo_verify.DEFAULT_ORDER
    text = "The answer is 4. Then 5"
    assert popo_verify.extract(text) == "4"
    assert popo_verify.extract(text, order=["boxed", "last_number"]) == "5"
    assert popo_verify.extract(text, order=("last_number",)) == "5"
    assert popo_verify.extract(text, order=["boxed"]) is None
    assert popo_verify.extract("nothing here") is None
    # The order also drives verify.
    assert popo_verify.verify("5", text, order=["last_number"]).correct
    assert not popo_verify.verify("5", text).correct


def test_a_bad_order_is_a_clear_error():
    with pytest.raises(ValueError, match=r"order\[1\]: unknown variant `box`.*`boxed`"):
        popo_verify.extract("x", order=["answer_is", "box"])
    with pytest.raises(TypeError, match="not a str"):
        popo_verify.extract("x", order="boxed")
    with pytest.raises(TypeError, match=r"order\[0\] must be a str"):
        popo_verify.verify("1", "1", order=[1])
    with pytest.raises(ValueError, match="empty"):
        popo_verify.verify("1", "1", order=[])


def test_equivalent():
    assert popo_verify.equivalent("\\frac{1}{2}", "0.5")
    assert popo_verify.equivalent("x = 3", "3")
    assert popo_verify.equivalent("\\{1, 2\\}", "\\{2, 1\\}")
    assert not popo_verify.equivalent("1, 2", "1")
    assert not popo_verify.equivalent("2", "3")


def test_verify_batch_keeps_order_and_matches_verify():
    golds = [g for g, _, _ in PAIRS] * 5
    responses = [r for _, r, _ in PAIRS] * 5
    expected = [c for _, _, c in PAIRS] * 5
    for threads in (None, 1, 2, 3):
        assert popo_verify.verify_batch(golds, responses, threads) == expected
        assert popo_verify.verify_batch(golds, responses, threads=threads) == expected
    verdicts = popo_verify.verify_batch_verdicts(golds, responses)
    assert verdicts == [popo_verify.verify(g, r) for g, r in zip(golds, responses)]
    # Any iterable of str works; empty is empty.
    assert popo_verify.verify_batch(tuple(golds), iter(responses)) == expected
    assert popo_verify.verify_batch([], []) == []
    assert popo_verify.verify_batch_verdicts([], [], 1) == []


def test_verify_batch_options_match_verify():
    solution = "Adding, we get $2 + 3 = \\boxed{5}$."
    text = "The answer is 4. Then 5"
    assert popo_verify.verify_batch([solution, "5"], ["\\boxed{5}", text]) == [True, False]
    assert popo_verify.verify_batch([solution], ["\\boxed{5}"], extract_gold=False) == [False]
    assert popo_verify.verify_batch(["5"], [text], order=["last_number"]) == [True]


def test_batch_argument_errors():
    with pytest.raises(ValueError, match="differ in length: 2 and 1"):
        popo_verify.verify_batch(["1", "2"], ["1"])
    with pytest.raises(TypeError, match="golds must be a list of str, not a str"):
        popo_verify.verify_batch("12", "12")
    with pytest.raises(TypeError, match=r"responses\[1\] must be a str, not int"):
        popo_verify.verify_batch(["1", "2"], ["1", 2])
    with pytest.raises(TypeError, match="golds must be a list of str, not int"):
        popo_verify.verify_batch(5, ["1"])
    for bad in (0, -1):
        with pytest.raises(ValueError, match="threads must be None"):
            popo_verify.verify_batch(["1"], ["1"], bad)


def test_argument_type_errors():
    with pytest.raises(TypeError):
        popo_verify.verify(1, "\\boxed{1}")
    with pytest.raises(TypeError):
        popo_verify.verify("1", None)
    with pytest.raises(TypeError):
        popo_verify.extract(b"\\boxed{1}")
    with pytest.raises(TypeError):
        popo_verify.equivalent("1", 1)
    # A lone surrogate is not valid text: a UnicodeEncodeError (a ValueError), not a crash.
    with pytest.raises(ValueError):
        popo_verify.verify("1", "\\boxed{\ud800}")


def test_hostile_text_never_raises():
    hostile = [
        "",
        "\\boxed{" * 5000,
        "}" * 5000 + "\\boxed{1}",
        "(" * 3000 + "1" + ")" * 3000,
        "9" * 5000,
        "\\frac" * 2000,
        "10^{10^{10^{10^{10}}}}",
        "\x00\\boxed{\x00}",
        "\\boxed{√2 ≈ 1.414 — ½}",
        "$" * 1001,
        "\\begin{pmatrix}" * 500,
    ]
    for text in hostile:
        for gold in ("1", text):
            v = popo_verify.verify(gold, text)
            assert isinstance(v.correct, bool)
        popo_verify.extract(text)
        popo_verify.equivalent(text, text)
    assert len(popo_verify.verify_batch(hostile, hostile, 2)) == len(hostile)


def test_a_panic_comes_back_as_a_python_exception():
    assert issubclass(popo_verify.InternalError, RuntimeError)
    with pytest.raises(popo_verify.InternalError, match="deliberate panic"):
        popo_verify._popo_verify._panic_for_tests()
    # The module still works afterwards.
    assert popo_verify.verify("1", "\\boxed{1}").correct


def test_benchmark_pairs_shape():
    golds = ["1", "2", "3", "4", "5"]
    pairs = popo_verify.benchmark_pairs(golds)
    assert len(pairs) == 4 * len(golds)
    assert all(isinstance(g, str) and isinstance(r, str) for g, r in pairs)
    assert pairs[0][0] == "1" and "\\boxed{1}" in pairs[0][1]


def test_module_metadata():
    assert popo_verify.__version__.count(".") == 2
    assert "verify" in popo_verify.verify.__doc__
    assert set(popo_verify.__all__) <= set(dir(popo_verify))

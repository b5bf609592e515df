"""popo-verify as a TRL reward function (``GRPOTrainer``, ``RLOOTrainer``).

TRL calls a reward function as ``f(prompts=..., completions=..., **columns)``, where every
other dataset column comes as a list with one entry per completion, and takes back one float
per completion (``None``: "not applicable to this sample"). ``accuracy_reward`` reads the gold
from the ``answer`` column and gives 1.0 to a correct completion, 0.0 otherwise::

    from popo_verify.trl import accuracy_reward
    from trl import GRPOConfig, GRPOTrainer

    # dataset rows: {"prompt": ..., "answer": "\\frac{1}{2}"}
    trainer = GRPOTrainer(model=model, reward_funcs=[accuracy_reward],
                          args=GRPOConfig(output_dir="out"), train_dataset=dataset)

For a gold in another column (MATH's ``solution``, whose ``\\boxed{}`` is the answer), or
other options::

    from popo_verify.trl import make_accuracy_reward
    reward = make_accuracy_reward(answer_column="solution")

Completions may be plain text (standard datasets) or conversational (a list of message dicts):
the last assistant turn is graded. A row whose gold is ``None`` gets ``None``.
"""

from typing import Any, Callable, List, Optional, Sequence

import popo_verify

__all__ = ["accuracy_reward", "completion_text", "make_accuracy_reward"]


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        # Multimodal content: a list of parts; the text parts, joined.
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise TypeError(f"message content must be a str or a list of parts, not {type(content).__name__}")


def completion_text(completion: Any) -> str:
    """The text to grade in one TRL completion.

    A ``str`` (standard format) is itself; a list of messages (conversational format,
    ``[{"role": "assistant", "content": "..."}]``) gives the content of its last assistant
    message (a message without a ``role`` counts as the assistant's), or ``""`` when there is
    none. Content given as a list of parts (``[{"type": "text", "text": ...}]``) gives its text.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        for message in reversed(completion):
            if not isinstance(message, dict):
                raise TypeError(
                    f"a conversational completion is a list of message dicts, found {type(message).__name__}"
                )
            if message.get("role", "assistant") == "assistant":
                return _content_text(message.get("content"))
        return ""
    raise TypeError(
        f"a completion must be a str or a list of message dicts, not {type(completion).__name__}"
    )


def _gold_text(gold: Any, column: str, row: int) -> Optional[str]:
    if gold is None or isinstance(gold, str):
        return gold
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        return str(gold)  # e.g. GSM8K-style integer answers
    raise TypeError(f"column {column!r}, row {row}: the gold must be a str or a number, not {type(gold).__name__}")


def make_accuracy_reward(
    answer_column: str = "answer",
    *,
    extract_gold: bool = True,
    literal_numbers: bool = True,
    order: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,
    correct: float = 1.0,
    incorrect: float = 0.0,
    name: str = "accuracy_reward",
) -> Callable[..., List[Optional[float]]]:
    """A TRL reward function that grades completions against the gold in ``answer_column``.

    answer_column: the dataset column holding the gold answer (or a worked solution whose
        final ``\\boxed{}`` is the answer, with ``extract_gold=True``).
    extract_gold, order: as in ``popo_verify.verify``.
    literal_numbers: as in ``popo_verify.verify``, but on by default here: a reward is what a
        policy optimizes, and one learns to restate the question's sum (``24 + 65 + 34`` for
        123) when any expression of the gold's value counts.
    threads: threads per call (None: every core; the GIL is released).
    correct, incorrect: the rewards given.
    name: the function's ``__name__``, which TRL logs the reward under (``rewards/<name>``).

    Usage::

        reward = make_accuracy_reward(answer_column="solution")
        trainer = GRPOTrainer(..., reward_funcs=[reward])
    """
    if order is not None:
        popo_verify.extract("", order=order)  # an unknown strategy name fails here, not mid-run
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None (every core) or a positive int, not {threads!r}")

    def reward(prompts: Any = None, completions: Any = None, **kwargs: Any) -> List[Optional[float]]:
        if completions is None:
            raise TypeError(f"{name}() needs completions= (TRL passes prompts=, completions= and the dataset columns)")
        if answer_column not in kwargs:
            hint = ""
            if "solution" in kwargs:
                hint = "; for MATH-style data use make_accuracy_reward(answer_column='solution')"
            raise KeyError(
                f"{name}: no dataset column {answer_column!r} among those TRL passed "
                f"({', '.join(sorted(kwargs)) or 'none'}){hint}"
            )
        golds = kwargs[answer_column]
        if isinstance(golds, str) or len(golds) != len(completions):
            raise ValueError(
                f"{name}: column {answer_column!r} must hold one gold per completion "
                f"({len(completions)} completions)"
            )
        texts = [completion_text(c) for c in completions]
        golds = [_gold_text(g, answer_column, i) for i, g in enumerate(golds)]
        rows = [i for i, g in enumerate(golds) if g is not None]
        verdicts = popo_verify.verify_batch(
            [golds[i] for i in rows],
            [texts[i] for i in rows],
            threads,
            extract_gold=extract_gold,
            literal_numbers=literal_numbers,
            order=order,
        )
        out: List[Optional[float]] = [None] * len(texts)
        for i, ok in zip(rows, verdicts):
            out[i] = correct if ok else incorrect
        return out

    reward.__name__ = name
    reward.__doc__ = f"TRL reward: {correct} when a completion's answer matches column {answer_column!r}, else {incorrect}."
    return reward


_default_reward = make_accuracy_reward()


def accuracy_reward(prompts: Any = None, completions: Any = None, **kwargs: Any) -> List[Optional[float]]:
    """TRL reward: 1.0 when a completion's answer matches the ``answer`` column, else 0.0.

    ``(prompts, completions, **kwargs) -> list[float]``, TRL's reward-function convention;
    completions may be plain text or conversational. See the module docstring::

        trainer = GRPOTrainer(model=model, reward_funcs=[accuracy_reward], ...)
    """
    return _default_reward(prompts, completions, **kwargs)

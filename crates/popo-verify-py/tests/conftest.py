"""Shared fixtures: the repository root, the shared data directory, example pairs."""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# (gold, response, correct): a spread of answer kinds and extraction paths.
PAIRS = [
    ("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$.", True),
    ("\\frac{1}{2004!}", "\\boxed{\\frac{1}{2006!}}", False),
    ("10\\%", "\\boxed{0.1}", True),
    ("\\text{(B)}", "The correct option is \\boxed{B}.", True),
    ("x^2+7x+10", "\\boxed{(x+5)(x+2)}", True),
    ("(-\\infty,-2)\\cup(3,\\infty)", "\\boxed{x<-2 \\text{ or } x>3}", True),
    ("3\\sqrt{2}", "\\boxed{\\sqrt{18}}", True),
    ("1,3,5", "\\boxed{1.3}", False),
    ("2021", "\\boxed{\\pm 2021}", False),
    ("72", "18 * 4 = 72\n#### 72", True),
    ("72", "18 * 4 = 71\n#### 71", False),
    ("\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}", "\\boxed{\\begin{pmatrix} 1 \\\\ -2 \\end{pmatrix}}", True),
    ("5", "I could not solve it.", False),
    ("3", "It is \\boxed{3} or \\boxed{4}.", False),
    ("7", "<answer>7</answer>", True),
    ("\\text{Monday}", "The final answer is \\text{monday}.", True),
]


def data_dir() -> Path:
    return Path(os.environ.get("DATA_DIR") or REPO.parent / "shared" / "data")


def under_ci() -> bool:
    """CI=true: a test that needs the shared data fails without it instead of checking nothing."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def read_math500():
    """MATH500's gold answers in file order, or None when the shared data is missing (a failure
    under CI=true)."""
    path = data_dir() / "math500.jsonl"
    if not path.is_file():
        if under_ci():
            pytest.fail(f"CI is set but {path} is missing: set DATA_DIR to the shared data",
                        pytrace=False)
        return None
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["answer"] for line in f if line.strip()]


@pytest.fixture(scope="session")
def math500_golds():
    """MATH500's gold answers; the test is skipped when the data is missing."""
    golds = read_math500()
    if golds is None:
        pytest.skip(f"{data_dir() / 'math500.jsonl'} not found: the shared data lives in "
                    "../shared/data next to the repository (or set DATA_DIR)")
    return golds

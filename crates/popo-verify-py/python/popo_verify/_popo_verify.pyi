# Type stubs for the native module (src/lib.rs); docstrings are in the module itself.
from typing import Iterable, Optional, Sequence, Tuple, List

__version__: str
DEFAULT_ORDER: Tuple[str, ...]

class InternalError(RuntimeError): ...

class Verdict:
    correct: bool
    gold_answer: Optional[str]
    pred_answer: Optional[str]
    reason: str
    def __init__(
        self,
        correct: bool,
        gold_answer: Optional[str] = None,
        pred_answer: Optional[str] = None,
        reason: str = "",
    ) -> None: ...
    def __bool__(self) -> bool: ...
    def to_dict(self) -> dict: ...

def verify(
    gold: str,
    response: str,
    *,
    extract_gold: bool = True,
    literal_numbers: bool = False,
    order: Optional[Sequence[str]] = None,
) -> Verdict: ...
def verify_batch(
    golds: Iterable[str],
    responses: Iterable[str],
    threads: Optional[int] = None,
    *,
    extract_gold: bool = True,
    literal_numbers: bool = False,
    order: Optional[Sequence[str]] = None,
) -> List[bool]: ...
def verify_batch_verdicts(
    golds: Iterable[str],
    responses: Iterable[str],
    threads: Optional[int] = None,
    *,
    extract_gold: bool = True,
    literal_numbers: bool = False,
    order: Optional[Sequence[str]] = None,
) -> List[Verdict]: ...
def extract(response: str, *, order: Optional[Sequence[str]] = None) -> Optional[str]: ...
def equivalent(a: str, b: str) -> bool: ...
def benchmark_pairs(golds: Iterable[str]) -> List[Tuple[str, str]]: ...
def _panic_for_tests() -> None: ...

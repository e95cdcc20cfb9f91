"""The tests of `is_palindrome.py`, as a refine loss: the failures are the feedback."""

CASES = [("racecar", True), ("Racecar", True), ("A man, a plan, a canal: Panama", True),
         ("hello", False), ("", True), ("No lemon, no melon", True), ("ab", False)]


def check(code: str) -> tuple[float, list[str]]:
    """(the share of tests passed, the failures)."""
    failures = _failures(code)
    if failures and failures[0].startswith("the code does not"):
        return 0.0, failures
    return 1 - len(failures) / len(CASES), failures


def _failures(code: str) -> list[str]:
    code = code.strip().removeprefix("```python").removeprefix("```").removesuffix("```")
    namespace: dict = {}
    try:
        exec(compile(code, "is_palindrome.py", "exec"), namespace)
        function = namespace["is_palindrome"]
    except Exception as error:  # any error is a failure to report
        return [f"the code does not define is_palindrome: {type(error).__name__}: {error}"]
    failures = []
    for text, expected in CASES:
        try:
            got = function(text)
        except Exception as error:
            failures.append(f"is_palindrome({text!r}) raised {type(error).__name__}: {error}")
            continue
        if got is not expected:
            failures.append(f"is_palindrome({text!r}) returned {got!r}, expected {expected!r}")
    return failures

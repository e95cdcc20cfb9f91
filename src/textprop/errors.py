"""The one error hierarchy of textprop.

Every error a user can meet derives from `TextpropError` and says what to do about it.
Engine errors split into `TransientEngineError` (worth retrying: rate limits, 5xx, timeouts,
dropped connections) and everything else, which fails at once.

    TextpropError
    +-- ConfigError (ValueError)        a config file, argument or dataset row
    +-- GraphError
    |   +-- MissingEngineError
    +-- EngineError
    |   +-- TransientEngineError        (engines.retry.RetriesExhaustedError)
    |   +-- EngineAuthError
    |   +-- EngineRequestError
    |   |   +-- ContextWindowError      the prompt does not fit the model's context
    |   +-- EngineReplyError
    |   +-- EngineUnavailableError
    |   +-- CacheMissError
    +-- BudgetExceeded
    +-- RunFolderError                  a run folder cannot be used as asked
    |   +-- RunInUseError               another process holds its lock
    |   +-- RunExistsError (FileExistsError)  it holds a run and --resume was not given
    +-- StorageError                    a ledger or cache file: corrupt, full disk, read-only
"""

from __future__ import annotations

import re
from typing import Any


class TextpropError(Exception):
    """Base class of every error textprop raises on purpose."""


class ConfigError(TextpropError, ValueError):
    """A config file, argument or dataset row is invalid; the message names where."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None,
                 line: int | None = None) -> None:
        where = ", ".join(
            part for part in (
                source,
                f"line {line}" if line is not None else None,
                f"field {field!r}" if field else None,
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.message, self.source, self.field, self.line = message, source, field, line


class GraphError(TextpropError):
    """The computation graph is used in a way backward cannot follow."""


class MissingEngineError(GraphError):
    """An operation needs an LLM engine and none was given."""


class EngineError(TextpropError):
    """An engine call failed. `provider` and `status` say where; never carries secrets."""

    def __init__(self, message: str, *, provider: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.provider, self.status = provider, status


class TransientEngineError(EngineError):
    """A failure that may pass on retry (429, 5xx, timeout, dropped connection, cut reply)."""

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after = retry_after


class EngineAuthError(EngineError):
    """The credentials were refused or are missing; the message names the variable to set."""


class EngineRequestError(EngineError):
    """The server refused the request itself (400, 404, unknown model): retrying won't help."""


class ContextWindowError(EngineRequestError):
    """The request does not fit the model's context window. Unlike other refused requests it
    says nothing about the configuration: a caller that builds long prompts (a rewrite with
    many failures) can give up on that one request and go on."""

    # How servers say it: llama.cpp and llama-cpp-python ("exceed context window", "exceeds
    # the available context size"), OpenAI and vLLM ("maximum context length"), Anthropic
    # ("prompt is too long").
    _WORDINGS = re.compile(r"context (window|length|size)|prompt is too long", re.IGNORECASE)

    @classmethod
    def describes(cls, message: str) -> bool:
        """Whether a refusal's message says the prompt is too long for the context."""
        return cls._WORDINGS.search(message) is not None


class EngineReplyError(EngineError):
    """The engine answered, but not in the form asked for (e.g. JSON that does not parse).

    `reply_text` keeps what it did answer, so a caller that can use a partial reply (a
    feedback cut at the token limit) loses nothing. `completion` (an `engines.base.Completion`,
    when the provider set it) is the paid reply itself: the meter counts its tokens and the
    cache records it, so a rerun or `--replay` meets the same error without paying again.
    """

    def __init__(self, message: str, *, provider: str | None = None, status: int | None = None,
                 reply_text: str | None = None, finish_reason: str | None = None,
                 completion: Any = None) -> None:
        super().__init__(message, provider=provider, status=status)
        self.reply_text, self.finish_reason = reply_text, finish_reason
        self.completion = completion


class EngineUnavailableError(EngineError):
    """An engine cannot be built here: a missing extra, model file or package."""


class CacheMissError(EngineError):
    """Replay mode met a request that was never recorded."""


class BudgetExceeded(TextpropError):
    """A call would pass the budget; it was not sent. `usage` is the usage so far."""

    def __init__(self, message: str, usage: Any = None) -> None:
        super().__init__(message)
        self.usage = usage


class RunFolderError(TextpropError):
    """A run folder cannot be used as asked; the message names the folder and what to do."""


class RunInUseError(RunFolderError):
    """Another process holds the run folder's lock; `pid` is that process (None: unknown)."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class RunExistsError(RunFolderError, FileExistsError):
    """The folder already holds a run, and the caller did not ask to resume it."""


class StorageError(TextpropError):
    """A file textprop keeps (a run's ledger, the LLM cache, a run folder) cannot be read or
    written: corrupt or truncated, a full disk, a read-only file system. Names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.message, self.path = message, path

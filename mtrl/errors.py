"""Errors a run reports in one line, shared by the layers that raise them."""

from __future__ import annotations

from pathlib import Path


class WriteFailed(Exception):
    """Writing a checkpoint or the run's logs failed with an ``OSError`` (a full disk, a quota,
    an I/O error); one line for users. ``path``: the file; ``error``: the ``OSError``."""

    def __init__(self, path: Path | str, error: OSError):
        reason = error.strerror or str(error) or type(error).__name__
        code = f" [errno {error.errno}]" if error.errno else ""
        super().__init__(f"cannot write '{path}': {reason}{code}")
        self.path, self.error = Path(path), error


def os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` that ``exc`` is or was raised from (torch turns an ``OSError`` of the file
    it writes into a ``RuntimeError``, with the ``OSError`` as its context)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

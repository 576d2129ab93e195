"""Progress of one demo request: the public pipeline's 0..1 progress of an operation, mapped into the
part of the request it takes. Generation, tokens and decoding themselves are
:class:`generator.pipeline.Pipeline`'s, the same object Python callers and ``generator.sample`` use.
"""

from __future__ import annotations

from generator.pipeline import ProgressFn


def within(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """``progress`` seen by an operation that takes the span [start, end] of the request (None stays None)."""
    if progress is None:
        return None
    return lambda fraction, message: progress(start + (end - start) * fraction, message)

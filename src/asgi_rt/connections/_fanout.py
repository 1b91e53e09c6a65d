"""Fan-out of one encoded message over many connections (the body of ``broadcast``)."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable

from ._encode import Frame
from .connection import Connection

__all__ = ["fan_out"]


def fan_out(
    message: Frame, size: int, targets: Iterable[Connection],
    exclude: Connection | Collection[Connection] | None, key: Hashable | None,
) -> int:  # fmt: skip
    """Deliver the shared ``message`` to each of ``targets`` not in ``exclude``.

    Returns:
        How many connections the message was sent or queued to.
    """
    if isinstance(exclude, Connection):
        exclude = (exclude,)
    delivered = 0
    for conn in targets:
        if exclude is not None and conn in exclude:
            continue
        delivered += conn.deliver(message, size, key)
    return delivered

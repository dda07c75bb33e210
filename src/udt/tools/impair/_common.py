"""Names every part of the relay shares: the two directions, the address type and the
relay's own error."""

from __future__ import annotations

from typing import Any, Literal

Direction = Literal["a_to_b", "b_to_a"]
DIRECTIONS: tuple[Direction, Direction] = ("a_to_b", "b_to_a")
Address = tuple[Any, ...]


class RelayError(RuntimeError):
    """The relay's worker (thread or child process) failed or could not be reached."""

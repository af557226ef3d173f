"""The order state machine (docs/architecture.md, State machines), and nothing else.

A transition not in the table is refused (and reported to the caller, who logs it with
both states). `unknown` may resolve to any state the venue reports, and a late fill after
`cancelled`/`expired` is applied as a fill without reviving the order.
"""

from __future__ import annotations

from core.models import OrderState as S

_FORWARD: dict[S, frozenset[S]] = {
    S.NEW: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset(
        {S.ACKED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.REJECTED, S.EXPIRED}
    ),
    S.ACKED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.REJECTED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.EXPIRED, S.CANCELLED}
    ),
    S.CANCEL_PENDING: frozenset({S.CANCELLED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED}),
}

TERMINAL: frozenset[S] = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED})


def can_transition(current: S, new: S) -> bool:
    """Whether the order state machine allows `current -> new`."""
    if current is S.UNKNOWN:
        return new is not S.NEW and new is not S.UNKNOWN
    if new is S.UNKNOWN:
        return current not in TERMINAL
    return new in _FORWARD.get(current, frozenset())


def is_terminal(state: S) -> bool:
    return state in TERMINAL

"""Modals of the manual venue actions: close one group (typed confirmation: the group's id)
and cancel the orders reconciliation quarantined (a list of what will be cancelled, y/Enter).

They hold no engine logic: the close modal hands the reason to an async `submit` given by the
app (the same `close_group` call the API and CLI make) and shows a refusal in place; the
orphan list is a ConfirmModal whose body these functions write.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static

from engine.control import OrphanRef
from quantarb_tui.screens.modals import Submit, SubmitModal

CLOSE_REASON = "operator close (tui)"
ORPHAN_REASON = "operator orphan cleanup (tui)"
ORPHANS_SHOWN = 12


def _dec(text: Any) -> Decimal:
    try:
        return Decimal(str(text))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def close_legs(detail: dict[str, Any] | None) -> list[str]:
    """What closing the group sends, one line per venue, from its ledger story (venue units);
    [] when it holds nothing (the engine refuses such a close anyway)."""
    if detail is None:
        return []
    held: dict[tuple[str, str], Decimal] = {}
    for order in detail.get("orders", []):
        qty = _dec(order.get("filled_qty"))
        key = (str(order.get("venue")), str(order.get("symbol")))
        held[key] = held.get(key, Decimal(0)) + (qty if order.get("side") == "buy" else -qty)
    lines = []
    for (venue, symbol), qty in sorted(held.items()):
        if qty:
            lines.append(f"{venue:<8} {'sell' if qty > 0 else 'buy':<4} {format(abs(qty).normalize(), 'f')} {symbol}")
    return lines


class CloseGroupModal(SubmitModal):
    """Type the group's id (and, optionally, a reason), Enter: both legs are closed at market."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, group_id: str, legs: list[str], submit: Submit) -> None:
        super().__init__(submit, classes="modal-close")
        self.kind = "close"
        self.group_id = group_id
        self._legs = legs

    def compose(self) -> ComposeResult:
        body = Text("Close this group's legs at market (IOC), filed with the group (venue units):\n")
        for line in self._legs or ["(the ledger shows nothing held: the engine will say)"]:
            body.append(f"  {line}\n", style="bold")
        body.append("Allowed while halted: the orders may only shrink a venue's position.\n")
        body.append("Type the group id ")
        body.append(self.group_id, style="bold")
        body.append(" and press Enter to confirm.")
        with Vertical(id="dialog"):
            yield Static(f"CLOSE GROUP {self.group_id}", id="dialog-title")
            yield Static(body, id="dialog-body")
            yield Input(placeholder="group id", id="dialog-input")
            yield Input(placeholder=f"reason (default: {CLOSE_REASON})", id="dialog-reason")
            yield Static("", id="dialog-error")
            yield Static(Text.assemble(("Enter", "bold"), " confirm    ", ("Esc", "bold"), " cancel"),
                         id="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#dialog-input", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        typed = self.query_one("#dialog-input", Input).value.strip()
        if typed != self.group_id:
            self.show_error(f"type the group id {self.group_id} to confirm, or Esc to cancel")
            self.query_one("#dialog-input", Input).focus()
            return
        if not self.busy:
            reason = self.query_one("#dialog-reason", Input).value.strip() or CLOSE_REASON
            self._run(reason)

    def action_cancel(self) -> None:
        if self.busy:  # the orders may be on the wire: the close finishes, then the modal goes
            self.show_error("closing… the orders are being sent; Esc once it is done")
            return
        self.dismiss(False)


def orphans_listed(status: dict[str, Any]) -> list[OrphanRef]:
    """The orders the cleanup dialog shows, and the ones it sends once confirmed: quarantined
    as open when the dialog opened (one quarantined later is never cancelled unseen)."""
    rec = status.get("reconcile")
    rows = rec.get("quarantined", []) if isinstance(rec, dict) else []
    return [OrphanRef(str(q.get("venue", "")), str(q.get("client_order_id") or ""), str(q.get("venue_order_id") or ""))
            for q in rows if isinstance(q, dict) and q.get("open_order")]


def orphans_body(status: dict[str, Any]) -> str | None:
    """The cleanup dialog's body: every order quarantined as open; None when there is none."""
    rec = status.get("reconcile")
    rows = rec.get("quarantined", []) if isinstance(rec, dict) else []
    listed = [q for q in rows if isinstance(q, dict) and q.get("open_order")]
    if not listed:
        return None
    lines = [f"Cancel {len(listed)} open order(s) the ledger does not own (quarantined by reconciliation):"]
    lines += [f"  {q.get('venue'):<8} {q.get('client_order_id') or 'ordId ' + str(q.get('venue_order_id'))}"
              f"  ({q.get('reason')})" for q in listed[:ORPHANS_SHOWN]]
    if len(listed) > ORPHANS_SHOWN:
        lines.append(f"  ... and {len(listed) - ORPHANS_SHOWN} more")
    lines.append("Each is checked again on the venue and in the ledger, journaled, then cancelled.")
    return "\n".join(lines)

"""One EA instance per terminal: the listener's lease (mt5_bridge.lease) and its answers."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.clock import ManualClock
from mt5_bridge.lease import InstanceLeases, LeaseRefusal, valid_instance
from tests.mt5_support import make_rig


def test_the_first_instance_holds_renews_and_a_second_waits_for_the_lease_to_lapse() -> None:
    clock = ManualClock()
    leases = InstanceLeases(clock, lease_ms=1000)
    assert leases.holder("T1") is None
    assert leases.claim("T1", "ea-a") == (None, "")  # first holder
    clock.advance(ms=600)
    assert leases.claim("T1", "ea-a") == (None, None)  # renewed: 1000 ms from now
    clock.advance(ms=600)
    assert leases.claim("T1", "ea-b") == (LeaseRefusal("ea-a", 400), None)
    assert leases.claim("T2", "ea-b") == (None, "")  # leases are per terminal
    clock.advance(ms=399)
    assert leases.claim("T1", "ea-b")[0] == LeaseRefusal("ea-a", 1)
    clock.advance(ms=1)
    assert leases.holder("T1") is None
    assert leases.claim("T1", "ea-b") == (None, "ea-a")  # taken over
    assert leases.holder("T1") == "ea-b"
    assert leases.claim("T1", "ea-a")[0] == LeaseRefusal("ea-b", 1000)
    with pytest.raises(ValueError, match="lease_ms"):
        InstanceLeases(clock, lease_ms=0)


@given(st.text(max_size=80))
def test_instance_ids(value: str) -> None:
    expected = 1 <= len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)
    assert valid_instance(value) is expected


def test_the_bridge_refuses_a_second_instance_with_409_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    rig = make_rig(ManualClock())
    assert rig.bridge.claim("T1", None) is None  # no header: outside the lease
    assert rig.bridge.claim("T1", "ea-a") is None
    with caplog.at_level(logging.WARNING, logger="mt5_bridge.bridge"):
        refused = rig.bridge.claim("T1", "ea-b")
    assert refused is not None and refused.status == 409
    assert refused.body == (b'{"error":"instance conflict","reason":"terminal T1 is held by EA instance ea-a for '
                            b'up to 10000 ms more"}')
    assert rig.bridge.rejected["instance_conflict"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "mt5 T1: refused EA instance ea-b: instance ea-a holds the terminal (for 10000 ms more unless it speaks); "
        "two EAs with one terminal id would both execute every command"]
    bad = rig.bridge.claim("T1", "not valid!")
    assert bad is not None and bad.status == 422
    assert rig.bridge.leases.holder("T1") == "ea-a"

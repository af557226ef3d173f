"""The pure alert policy: deduplication, the rate limit, daily PnL levels, channel labels.

Deterministic: every decision takes the time as an argument (no clock is read)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.alert_policy import RATE_WINDOW_MS, AlertPolicy, PnlLevels, Verdict, channel_label

T0 = 1_700_000_000_000


# -- deduplication ---------------------------------------------------------------------------
def test_the_same_key_within_the_window_is_counted_and_said_with_the_next_one_sent() -> None:
    policy = AlertPolicy(dedup_ms=300_000, max_per_minute=100)
    assert policy.decide("halt:x", urgent=True, now_ms=T0) == Verdict(True)
    assert policy.decide("halt:x", urgent=True, now_ms=T0 + 1_000) == Verdict(False, why_not="duplicate")
    assert policy.decide("halt:x", urgent=False, now_ms=T0 + 299_999) == Verdict(False, why_not="duplicate")
    assert policy.decide("halt:y", urgent=False, now_ms=T0 + 2_000) == Verdict(True)  # another key goes
    assert policy.decide("halt:x", urgent=True, now_ms=T0 + 300_000) == Verdict(True, repeats=2)
    assert policy.decide("halt:x", urgent=True, now_ms=T0 + 300_001) == Verdict(False, why_not="duplicate")
    assert policy.duplicates == 3


def test_no_deduplication_window_sends_every_alert() -> None:
    policy = AlertPolicy(dedup_ms=0, max_per_minute=100)
    assert [policy.decide("k", urgent=False, now_ms=T0).send for _ in range(5)] == [True] * 5


# -- rate limit ------------------------------------------------------------------------------
def test_beyond_the_rate_non_urgent_alerts_are_held_back_and_counted() -> None:
    policy = AlertPolicy(dedup_ms=0, max_per_minute=3)
    sent = [policy.decide(f"k{i}", urgent=False, now_ms=T0 + i).send for i in range(3)]
    assert sent == [True, True, True]
    assert policy.decide("k3", urgent=False, now_ms=T0 + 10) == Verdict(False, why_not="rate limit")
    assert policy.decide("k4", urgent=False, now_ms=T0 + 20) == Verdict(False, why_not="rate limit")
    # An urgent one always goes, and says what was held back before it.
    assert policy.decide("halt", urgent=True, now_ms=T0 + 30) == Verdict(True, held_back=2)
    # The window is still full (4 sent in it): held back again until the oldest leaves it.
    assert policy.decide("k5", urgent=False, now_ms=T0 + RATE_WINDOW_MS - 1) == Verdict(False, why_not="rate limit")
    assert policy.decide("k6", urgent=False, now_ms=T0 + RATE_WINDOW_MS + 1) == Verdict(True, held_back=1)
    assert policy.rate_limited == 3


def test_a_held_back_alert_is_not_remembered_as_sent() -> None:
    policy = AlertPolicy(dedup_ms=300_000, max_per_minute=1)
    assert policy.decide("a", urgent=False, now_ms=T0).send
    assert policy.decide("b", urgent=False, now_ms=T0 + 1).why_not == "rate limit"
    # "b" was never sent, so it is not a duplicate once the rate allows it.
    assert policy.decide("b", urgent=False, now_ms=T0 + RATE_WINDOW_MS) == Verdict(True, held_back=1)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        AlertPolicy(dedup_ms=-1, max_per_minute=1)
    with pytest.raises(ValueError):
        AlertPolicy(dedup_ms=0, max_per_minute=0)


@settings(max_examples=300, deadline=None)
@given(
    dedup_ms=st.integers(0, 120_000),
    max_per_minute=st.integers(1, 6),
    calls=st.lists(st.tuples(st.sampled_from("abcd"), st.booleans(), st.integers(0, 30_000)), max_size=80),
)
def test_policy_invariants(dedup_ms: int, max_per_minute: int, calls: list[tuple[str, bool, int]]) -> None:
    """Every alert is sent, a duplicate or held back; non-urgent sends never exceed the rate in
    any 60 s window; a key is never sent twice within the dedup window; every left-out alert is
    reported by a later send or still pending."""
    policy = AlertPolicy(dedup_ms=dedup_ms, max_per_minute=max_per_minute)
    now = T0
    sends: list[tuple[int, str, bool]] = []
    reported = 0
    for key, urgent, step in calls:
        now += step
        verdict = policy.decide(key, urgent=urgent, now_ms=now)
        if verdict.send:
            before = [t for t, _, _ in sends if now - t < RATE_WINDOW_MS]
            assert urgent or len(before) < max_per_minute
            assert all(now - t >= dedup_ms for t, k, _ in sends if k == key)
            sends.append((now, key, urgent))
            reported += verdict.repeats + verdict.held_back
    assert len(sends) + policy.duplicates + policy.rate_limited == len(calls)
    assert reported <= policy.duplicates + policy.rate_limited


# -- daily PnL levels ------------------------------------------------------------------------
def test_each_level_is_said_once_a_day_when_reached() -> None:
    levels = PnlLevels([Decimal(-100), Decimal(-50), Decimal(200)])
    assert levels.observe(1, Decimal(0)) == []
    assert levels.observe(1, Decimal("-49.99")) == []
    assert levels.observe(1, Decimal(-50)) == [Decimal(-50)]
    assert levels.observe(1, Decimal(-40)) == []  # back above: not said again today ...
    assert levels.observe(1, Decimal(-60)) == []
    assert levels.observe(1, Decimal(-150)) == [Decimal(-100)]
    assert levels.observe(1, Decimal(250)) == [Decimal(200)]
    assert levels.observe(2, Decimal(-120)) == [Decimal(-50), Decimal(-100)]  # ... a new day: again
    assert levels.observe(2, Decimal(-120)) == []


def test_a_zero_level_is_refused() -> None:
    with pytest.raises(ValueError):
        PnlLevels([Decimal(0)])


# -- channel labels --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("json://127.0.0.1:9000/hook", "json://127.0.0.1:9000/***"),
        ("jsons://user:pass@hooks.example.org/path/TOKEN?x=1", "jsons://hooks.example.org/***"),
        ("JSON://[::1]:80/a", "json://[::1]:80/***"),
        ("tgram://123456:ABC-secret/987", "tgram://***"),
        ("discord://1234/abcd", "discord://***"),
        ("mailto://user:pass@example.org", "mailto://***"),
        ("slack://T1/B2/C3", "slack://***"),
        ("json://host with space/x", "json://***"),
        ("not a url", "***"),
        ("", "***"),
    ],
)
def test_channel_label_shows_only_the_scheme_or_a_webhooks_host(url: str, label: str) -> None:
    assert channel_label(url) == label


_SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=6,
                  max_size=30)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["tgram", "discord", "slack", "json", "jsons", "mailto", "form", "ntfy"]),
       user=_SECRET, password=_SECRET, path=_SECRET, query=_SECRET)
def test_channel_label_never_shows_a_secret_part(scheme: str, user: str, password: str, path: str,
                                                 query: str) -> None:
    """The label is `scheme://***`, or for a webhook `scheme://<its host>/***` (when the host is a
    host name): nothing else of
    the URL (user, password, path, query) ever shows."""
    webhook = scheme in ("json", "jsons", "form")
    for url, host in ((f"{scheme}://{user}:{password}@example.org/{path}?token={query}", "example.org"),
                      (f"{scheme}://{path}/{query}", path), (f"{scheme}://{user}@{password}/{path}", password)):
        shown = {f"{scheme}://***", f"{scheme}://{host}/***"} if webhook else {f"{scheme}://***"}
        assert channel_label(url) in shown

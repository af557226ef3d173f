"""Alerts: which engine events are alerts, what a message says, the `[alerts]` config (its URLs
are secrets: never echoed), and one channel against real loopback sockets (apprise's `json://`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from core.alert_policy import Verdict
from core.clock import ManualClock
from core.config import AlertsConfig, demo_config
from engine.alert_channels import Channel, ChannelError, Message
from engine.alerts import Alert, Alerts, classify, format_message, url_problems
from engine.errors import RuntimeFailure
from engine.events import EngineEvent, EventLog
from engine.redact import redact_config
from engine.settings import ConfigError, load_config
from quantarb_tui.cli import app as cli_app
from tests.alert_support import dead_port, wait_until, webhook

T0 = 1_800_000_000_000
TOKEN = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"  # the shape of a Telegram bot token


def ev(kind: str, text: str, level: str = "info", **data: object) -> EngineEvent:
    return EngineEvent(T0, kind, text, level, dict(data))  # type: ignore[arg-type]


# -- classification --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("event", "key", "severity", "title", "urgent"),
    [
        (ev("start", "engine started: mode=live"), "process:start", "info", "started", True),
        (ev("stop", "engine stopped"), "process:stop", "warning", "stopped", True),
        (ev("state", "HALTED: operator kill", "warn"), "halt:operator kill", "critical", "HALTED", True),
        (ev("state", "HALTED: flatten: x", "warn"), "halt:flatten: x", "critical", "HALTED", True),
        (ev("state", "HALTED (restored): ledger: disk full", "warn"), "halt:ledger: disk full", "critical",
         "HALTED", True),
        (ev("state", "ACTIVE (rearmed): checked", "info"), "rearm:ACTIVE (rearmed): checked", "info",
         "rearmed: trading again", False),
        (ev("breaker", "breaker trip stale:okx: no quote for 6.0s (> 5.0s)", "warn", breaker="stale:okx",
            tripped=True), "breaker:stale:okx:trip", "warning", "venue okx blocked: no quotes", False),
        (ev("breaker", "breaker trip down:binance: disconnected for 31.0s (> 30.0s)", "error",
            breaker="down:binance", tripped=True), "breaker:down:binance:trip", "critical",
         "HALTED: venue binance down", True),
        (ev("breaker", "breaker trip stale_halt:mt5: no quote for 31.0s (> 30.0s)", "error",
            breaker="stale_halt:mt5", tripped=True), "breaker:stale_halt:mt5:trip", "critical",
         "HALTED: MT5 EA silent", True),
        (ev("breaker", "breaker trip stale:mt5: no quote for 6.0s", "warn", breaker="stale:mt5", tripped=True),
         "breaker:stale:mt5:trip", "warning", "MT5 EA silent", False),
        (ev("breaker", "breaker trip balance:okx: free 10 < floor 100", "warn", breaker="balance:okx", tripped=True),
         "breaker:balance:okx:trip", "warning", "venue okx blocked: low free balance", False),
        (ev("breaker", "breaker trip outlier:binance: 5 quotes", "warn", breaker="outlier:binance", tripped=True),
         "breaker:outlier:binance:trip", "warning", "venue binance blocked: price outliers", False),
        (ev("breaker", "breaker trip compensation_failed: a group ended failed", "error",
            breaker="compensation_failed", tripped=True), "breaker:compensation_failed:trip", "critical",
         "HALTED: compensation failed", True),
        (ev("breaker", "breaker trip consecutive_failures: 3 in a row", "warn", breaker="consecutive_failures",
            tripped=True), "breaker:consecutive_failures:trip", "warning", "failed groups in a row", False),
        (ev("breaker", "breaker release stale:okx: quotes flowing", "warn", breaker="stale:okx", tripped=False),
         "breaker:stale:okx:release", "info", "released: venue okx blocked: no quotes", False),
        (ev("breaker", "breaker release reconcile:okx: reconciled", "warn", breaker="reconcile:okx", tripped=False),
         "breaker:reconcile:okx:release", "info", "released: venue okx reconciled again", False),
        (ev("breaker", "breaker daily_loss still tripped (restored): realized today -250", "warn"),
         "breaker:restored:breaker daily_loss still tripped (restored): realized today -250", "warning",
         "breaker still tripped after restart", False),
        (ev("reconcile", "okx: cannot reconcile: connection refused", "warn", venue="okx"),
         "reconcile:cannot:okx", "warning", "cannot reconcile okx", False),
        (ev("reconcile", "okx: quarantined web1: an open order that is not ours (not adopted, ...)", "warn",
            venue="okx", order="web1"), "reconcile:quarantine:okx:web1", "warning", "order quarantined on okx", False),
        (ev("reconcile", "halting: position differs: okx BTC: the venue holds 7, the ledger 5", "error", venue="okx"),
         "reconcile:position:okx", "critical", "HALTED: position differs on okx", True),
        (ev("alert", "group g1 FAILED: residual 1 BTC; trading halted", "error", group_id="g1"),
         "alert:group g1 FAILED: residual 1 BTC; trading halted", "critical", "compensation failed", True),
        (ev("alert", "group g2 BTC held open past the hold timeout: its residual will be unwound", "error"),
         "alert:group g2 BTC held open past the hold timeout: its residual will be unwound", "warning", "alert",
         False),
        (ev("flatten", "flatten done: residual okx:BTC 0.1", "error"), "flatten", "critical",
         "flatten left a residual", True),
        (ev("flatten", "flatten done: flat"), "flatten", "info", "flatten done", False),
        (ev("error", "risk event NOT journaled: OSError()", "error"), "error:risk event NOT journaled: OSError()",
         "warning", "error", False),
        (ev("ledger", "ledger writes again (journal at seq 9); trading stays halted", "warn"),
         "ledger:ledger writes again (journal at seq 9); trading stays halted", "warning", "ledger", False),
    ],
)
def test_alertable_events(event: EngineEvent, key: str, severity: str, title: str, urgent: bool) -> None:
    assert classify(event) == Alert(key, severity, title, event.text, T0, urgent)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        ev("intent", "intent g1 BTC buy okx"),
        ev("group", "group g1 BTC -> hedged"),
        ev("compensation", "group g1: retry_hedge residual", "warn"),
        ev("state", "PAUSED: operator pause", "warn"),
        ev("state", "ACTIVE (resumed): go", "info"),
        ev("error", "halting: engine: ValueError('x')", "error"),  # the HALTED state event says it
        ev("error", "ledger cannot write, trading halted: disk full", "error"),  # likewise
        ev("error", "order c1 unknown: TimeoutError()", "warn"),
        ev("reconcile", "reconciled with okx; next pass in 30 s"),
        ev("breaker", "breaker trip reconcile:okx: cannot reconcile: x", "warn", breaker="reconcile:okx",
           tripped=True),  # the reconcile event says it, with the venue's words
        ev("breaker", "breaker trip position:okx: position differs", "error", breaker="position:okx", tripped=True),
        ev("breaker", "breaker release hold_timeout: group g1", "warn", breaker="hold_timeout", tripped=False),
        ev("ledger", "ledger opened", "info"),
        ev("alerts", "alerts: channel urls[0] json://127.0.0.1:1/*** failing: refused", "warn"),  # never a loop
        ev("feed", "feed okx transport=ws frames=1"),
    ],
)
def test_events_that_are_not_alerts(event: EngineEvent) -> None:
    assert classify(event) is None


def test_a_message_says_what_when_where_and_what_was_left_out() -> None:
    alert = Alert("halt:x", "critical", "HALTED", "HALTED: operator kill", T0, urgent=True)
    msg = format_message(alert, Verdict(True, repeats=2, held_back=3), host="box1", mode="live")
    assert msg.title == "quantarb box1: HALTED"
    assert msg.body.splitlines() == [
        "HALTED: operator kill",
        "2027-01-15 08:00:00 UTC · mode live",
        "(and 2 more like it since the last message about it)",
        "(3 other alert(s) held back by the rate limit)",
    ]
    assert msg.severity == "critical"
    long = format_message(Alert("k", "info", "t", "x" * 5000, T0), Verdict(True), host="h", mode="paper")
    assert len(long.body.splitlines()[0]) == 1000


# -- the config: URLs are secrets -----------------------------------------------------------
def test_urls_come_from_the_environment_and_are_never_shown(tmp_path: Path) -> None:
    urls = [f"tgram://{TOKEN}/12345", "json://127.0.0.1:9000/hook/s3cr3tpath"]
    loaded = load_config(None, {"QUANTARB_ALERTS__URLS": json.dumps(urls), "QUANTARB_ALERTS__PNL_LEVELS": "[-50]",
                                "HOME": str(tmp_path)})
    alerts = loaded.config.alerts
    assert [u.get_secret_value() for u in alerts.urls] == urls
    assert alerts.pnl_levels == [Decimal(-50)]
    assert loaded.overrides == ("QUANTARB_ALERTS__PNL_LEVELS", "QUANTARB_ALERTS__URLS")
    for shown in (repr(loaded.config), str(alerts), json.dumps(redact_config(loaded.config.model_dump(mode="json"))),
                  str(redact_config(loaded.config.model_dump(mode="python")))):
        assert TOKEN not in shown and "s3cr3tpath" not in shown
    assert loaded.config.model_dump(mode="json")["alerts"]["urls"] == ["tgram://***", "json://127.0.0.1:9000/***"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (json.dumps([f"tgram://{TOKEN}", f"no scheme {TOKEN}"]),
         "QUANTARB_ALERTS__URLS: alerts.urls[1]: not a URL (scheme://..., no spaces, at most 2048 characters); "
         "the value is not shown (it may hold a token)"),
        (json.dumps(f"tgram://{TOKEN}"), "QUANTARB_ALERTS__URLS: expected an array of URL strings"),
        (json.dumps([f"tgram://{TOKEN}", f"tgram://{TOKEN}"]), "QUANTARB_ALERTS__URLS: alerts.urls[1]: listed twice"),
        ("[5]", "QUANTARB_ALERTS__URLS: alerts.urls[0]: expected a URL string"),
        (f"tgram://{TOKEN}",
         "QUANTARB_ALERTS__URLS: not valid JSON (arrays and tables from the environment are JSON, e.g. '[\"T1\"]')"),
    ],
)
def test_a_bad_url_is_refused_without_echoing_it(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"QUANTARB_ALERTS__URLS": value})
    assert str(err.value) == message
    assert TOKEN not in str(err.value)


def test_a_bad_url_in_the_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text(f'[[pairs]]\nname = "BTC"\n[pairs.instruments.mt5]\nsymbol = "BTCUSD"\n'
                    f'[pairs.instruments.okx]\nsymbol = "BTC-USDT-SWAP"\n[venues.mt5]\n[venues.okx]\n'
                    f'[alerts]\nurls = "{TOKEN}"\npnl_levels = [0]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), {})
    assert str(err.value) == f"{path}: alerts.urls: expected an array of URL strings"


@pytest.mark.parametrize(("levels", "message"), [
    ("[0]", "QUANTARB_ALERTS__PNL_LEVELS: alerts.pnl_levels[0]: must be a finite number other than 0"),
    ("[-5, 10, -5]", "QUANTARB_ALERTS__PNL_LEVELS: each level only once"),
    ('["x"]', "QUANTARB_ALERTS__PNL_LEVELS: alerts.pnl_levels[0]: expected decimal number, got 'x'"),
])
def test_bad_pnl_levels_are_refused(levels: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, {"QUANTARB_ALERTS__PNL_LEVELS": levels})
    assert str(err.value) == message


# Every generated string carries the marker: a refusal that quotes any value shows it.
_MARKED = st.one_of(st.text(max_size=40).map(lambda s: "§" + s),
                    st.text(alphabet="abc:/@?=&.", max_size=30).map(lambda s: f"json://§{s}"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_MARKED, st.integers(), st.none()), max_size=4))
def test_any_url_list_is_accepted_or_refused_without_its_values(values: list[object]) -> None:
    """The parser at the boundary: whatever the list holds, a refusal (the loader's message, and
    pydantic's own error text) never quotes it, and nothing is half-accepted."""
    try:
        cfg = AlertsConfig.model_validate({"urls": values})
    except ValueError as exc:
        assert "§" not in str(exc)
        with pytest.raises(ConfigError) as err:
            load_config(None, {"QUANTARB_ALERTS__URLS": json.dumps(values)})
        assert "§" not in str(err.value)
        return
    assert [u.get_secret_value() for u in cfg.urls] == values


def test_url_problems_name_the_url_by_its_label_only() -> None:
    cfg = AlertsConfig.model_validate({"urls": ["json://127.0.0.1:9/x", f"nosuchscheme://{TOKEN}"]})
    assert url_problems(cfg) == ["alerts.urls[1]: nosuchscheme://***: not a URL apprise can send to (unknown "
                                 "scheme, or a required part missing); the value is not shown"]
    with pytest.raises(RuntimeFailure, match=r"alerts\.urls\[1\]: nosuchscheme://\*\*\*"):
        Alerts(cfg, EventLog(), ManualClock(), mode="paper")


def test_no_url_means_no_subscriber_and_no_channel() -> None:
    events = EventLog()
    alerts = Alerts(AlertsConfig(), events, ManualClock(), mode="paper")
    assert not alerts.enabled
    events.emit(ev("state", "HALTED: x", "warn"))
    assert alerts.raised == 0


def test_the_demo_has_no_alerts() -> None:
    assert demo_config().alerts.urls == []


def test_config_show_prints_labels_never_the_urls(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "QUANTARB_ALERTS__URLS": json.dumps([f"tgram://{TOKEN}/1", "json://h:1/p/s3cr3t"])}
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(cli_app, args, env=env)
        assert result.exit_code == 0, result.stderr
        assert TOKEN not in result.stdout and "s3cr3t" not in result.stdout
        assert "tgram://***" in result.stdout and "json://h:1/***" in result.stdout


# -- one channel, real sockets ---------------------------------------------------------------
def test_a_channel_posts_json_to_a_loopback_webhook() -> None:
    with webhook() as hook:
        channel = Channel(0, hook.url("hook/path"), timeout_s=5, queue_size=4)
        assert channel.label == f"urls[0] json://127.0.0.1:{hook.port}/***"
        assert channel.send(Message("quantarb h: HALTED", "HALTED: x\nwhen", "critical")) == (True, "")
        [got] = hook.wait(1)
        assert got["title"] == "quantarb h: HALTED" and got["message"] == "HALTED: x\nwhen"
        assert got["type"] == "failure"
        assert hook.paths == ["/hook/path"]
        assert (channel.sent, channel.failed, channel.ok) == (1, 0, True)


def test_a_refused_channel_fails_with_a_scrubbed_reason_and_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with dead_port() as port:
        channel = Channel(2, f"json://user:{TOKEN}@127.0.0.1:{port}/secretpath/{TOKEN}?k=v4lue",
                          timeout_s=5, queue_size=4)
        ok, reason = channel.send(Message("t", "b", "info"))
    assert not ok and reason
    assert TOKEN not in reason and "secretpath" not in reason and "v4lue" not in reason
    assert (channel.sent, channel.failed, channel.ok, channel.last_error) == (0, 1, False, reason)
    assert not [r for r in caplog.records if r.name.startswith("apprise")]  # apprise's lines stay in


def test_offer_never_blocks_a_full_queue_drops_and_counts() -> None:
    with webhook(hang=True) as hook:
        channel = Channel(0, hook.url(), timeout_s=30, queue_size=2)
        assert channel.offer(Message("t", "1", "info"))
        hook.wait_started(1)  # the first is in flight, held by the server
        assert [channel.offer(Message("t", str(i), "info")) for i in range(2, 7)] == [True, True, False, False, False]
        assert (channel.pending, channel.dropped) == (3, 3)
        hook.release()
        hook.wait(3)
        wait_until(lambda: channel.pending == 0, "the queue to drain")
        assert (channel.sent, channel.failed, channel.dropped) == (3, 0, 3)
        assert [m["message"] for m in hook.messages] == ["1", "2", "3"]
        channel.close()
        assert channel.join(10)


def test_a_url_apprise_cannot_use_is_a_channel_error() -> None:
    with pytest.raises(ChannelError, match=r"alerts\.urls\[0\]: tgram://\*\*\*: not a URL apprise can send to"):
        Channel(0, "tgram://", timeout_s=1, queue_size=1)


async def test_alerts_judge_and_offer_on_the_loop_and_say_a_failing_channel_once() -> None:
    clock = ManualClock(wall_ms=T0)
    events = EventLog()
    with webhook() as hook, dead_port() as port:
        cfg = AlertsConfig.model_validate({"urls": [hook.url(), f"json://127.0.0.1:{port}/x"], "dedup_s": 60})
        alerts = Alerts(cfg, events, clock, mode="paper", host="box")
        events.emit(ev("state", "HALTED: operator kill", "warn"))
        events.emit(ev("state", "HALTED: operator kill", "warn"))  # a duplicate: counted, not sent
        clock.advance(ms=60_000)
        events.emit(ev("state", "HALTED: operator kill", "warn"))
        messages = await asyncio.to_thread(hook.wait, 2)
        assert [m["title"] for m in messages] == ["quantarb box: HALTED"] * 2
        assert "(and 1 more like it since the last message about it)" in messages[1]["message"]
        dead = alerts.channels[1]
        await asyncio.to_thread(wait_until, lambda: dead.pending == 0 and dead.failed == 2, "the dead channel")
        await asyncio.sleep(0)  # the channel's result is handed to the loop
        said = [e.text for e in events.recent() if e.kind == "alerts"]
        assert said == [f"alerts: channel urls[1] json://127.0.0.1:{port}/*** failing: {dead.last_error}"]
        assert await alerts.close() == 0
        assert alerts.stats()["channels"][0] == {"channel": f"urls[0] json://127.0.0.1:{hook.port}/***", "sent": 2,
                                                 "failed": 0, "dropped": 0, "pending": 0, "last_error": ""}
        events.emit(ev("state", "HALTED: after close", "warn"))
        assert alerts.raised == 2  # closed: nothing more is offered


def test_a_listener_that_breaks_never_reaches_the_emitter() -> None:
    events = EventLog()
    with webhook() as hook:
        alerts = Alerts(AlertsConfig.model_validate({"urls": [hook.url()]}), events, ManualClock(), mode="paper")
        alerts._policy = None  # type: ignore[assignment]  # any fault inside the listener
        events.emit(ev("state", "HALTED: x", "warn"))
        events.emit(ev("state", "HALTED: y", "warn"))
    assert alerts.errors == 2 and events.total == 3
    said = [e.text for e in events.recent() if e.kind == "alerts"]
    assert said == ["alerts: an event could not be judged: AttributeError(\"'NoneType' object has no attribute "
                    "'decide'\")"]


def test_daily_pnl_levels_are_polled() -> None:
    day_pnl = [(20_000, Decimal(0))]
    with webhook() as hook:
        cfg = AlertsConfig.model_validate({"urls": [hook.url()], "pnl_levels": ["-50", "100"]})
        alerts = Alerts(cfg, EventLog(), ManualClock(wall_ms=T0), mode="live", host="h",
                        daily_pnl=lambda: day_pnl[-1])
        alerts.poll_pnl()
        day_pnl.append((20_000, Decimal("-61.237")))
        alerts.poll_pnl()
        alerts.poll_pnl()
        [msg] = hook.wait(1)
        assert msg["title"] == "quantarb h: daily PnL at or below -50"
        assert msg["message"].startswith("realized PnL today (UTC) is -61.24, past the alert level -50\n")
        assert msg["type"] == "warning"
        assert alerts.raised == 1

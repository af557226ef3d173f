"""What a rehearsal world writes: a live config that validates and agrees with the simulators'
listings, TOML that reads back as written, and secrets in a private env file."""

from __future__ import annotations

import os
import stat
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.config import QuantarbConfig
from sim.binance_exchange import DEFAULT_SYMBOLS
from sim.epoch_market import world_pairs
from sim.okx_accounts import spec_from_instrument
from sim.world_cli import WorldOptions, child_argvs, child_env
from sim.world_config import (
    BinanceMarket,
    WorldEndpoints,
    WorldSecrets,
    env_file_text,
    to_toml,
    world_config,
    write_file,
)

ENDPOINTS = WorldEndpoints(okx="http://127.0.0.1:1001", binance_spot="http://127.0.0.1:1002",
                           binance_usdm="http://127.0.0.1:1003", listener_host="127.0.0.1", listener_port=1004)


def loaded(data: dict[str, Any]) -> QuantarbConfig:
    return QuantarbConfig.model_validate(tomllib.loads(to_toml(data, "header\n\nline")))


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_the_config_points_at_the_world_and_lists_what_the_sims_list(market: BinanceMarket, tmp_path: Path) -> None:
    data = world_config(ENDPOINTS, ledger=tmp_path / "w.db", binance_market=market)
    cfg = loaded(data)
    assert cfg.engine.execution == "live" and cfg.engine.ledger == str(tmp_path / "w.db")
    assert (cfg.listener.host, cfg.listener.port) == ("127.0.0.1", 1004)
    okx, binance = cfg.venues.okx, cfg.venues.binance
    assert okx is not None and binance is not None and cfg.venues.mt5 is not None
    assert cfg.venues.mt5.terminals == ["T1"]
    assert (okx.rest_url, okx.ws_url, okx.private_ws_url) == (
        "http://127.0.0.1:1001", "ws://127.0.0.1:1001/ws/v5/public", "ws://127.0.0.1:1001/ws/v5/private")
    base = "127.0.0.1:1002" if market == "spot" else "127.0.0.1:1003"
    assert binance.market == market
    assert (binance.rest_url, binance.trade_rest_url, binance.ws_url) == (f"http://{base}", f"http://{base}",
                                                                         f"ws://{base}")
    if market == "spot":
        assert (binance.ws_api_url, binance.user_stream_url) == (f"ws://{base}/ws-api/v3", None)
    else:
        assert (binance.ws_api_url, binance.user_stream_url) == (f"ws://{base}/ws-fapi/v1", f"ws://{base}/private")
    # Every Binance instrument carries the simulated market's filters, OKX and MT5 the world's
    # (the OKX simulator lists exactly `spec_from_instrument` of the world's pairs).
    listed = {s.symbol: s for s in DEFAULT_SYMBOLS[market]}
    world = {(i.venue, i.symbol): i for p in world_pairs() for i in p.instruments}
    for pair in cfg.build_pairs():
        for inst in pair.instruments:
            if inst.venue == "binance":
                spec = listed[inst.symbol]
                assert (inst.tick_size, inst.lot_step, inst.min_qty, inst.min_notional) == (
                    spec.tick_size, spec.step_size, spec.min_qty, spec.min_notional)
            else:
                assert inst == world[(inst.venue, inst.symbol)]
                if inst.venue == "okx":
                    assert spec_from_instrument(inst) == spec_from_instrument(world[("okx", inst.symbol)])
    # Tight limits for a rehearsal.
    assert cfg.risk.max_leg_notional <= Decimal(3000) and cfg.risk.daily_loss_limit <= Decimal(50)


@st.composite
def tables(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    keys = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8)
    scalar = st.one_of(
        st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    )
    values: list[st.SearchStrategy[Any]] = [scalar, st.lists(st.text(alphabet="ab-_.1", max_size=5), max_size=3)]
    if depth < 2:
        values.append(tables(depth + 1))
        values.append(st.lists(tables(depth + 1), min_size=1, max_size=2))
    return draw(st.dictionaries(keys, st.one_of(values), max_size=4))


@given(tables())
def test_toml_reads_back_as_written(data: dict[str, Any]) -> None:
    assert tomllib.loads(to_toml(data)) == data


def test_toml_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="control characters"):
        to_toml({"a": "line\nbreak"})
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"a": object()})


def test_secrets_are_fresh_url_safe_and_hidden_from_repr() -> None:
    one, two = WorldSecrets.generate(), WorldSecrets.generate("SIM_2")
    env = one.env()
    assert set(env) == {"QUANTARB_OKX_API_KEY", "QUANTARB_OKX_API_SECRET", "QUANTARB_OKX_API_PASSPHRASE",
                        "QUANTARB_BINANCE_API_KEY", "QUANTARB_BINANCE_API_SECRET", "QUANTARB_ADMIN_TOKEN",
                        "QUANTARB_MT5_SECRET_T1"}
    assert "QUANTARB_MT5_SECRET_SIM_2" in two.env()
    values = list(env.values()) + list(two.env().values())
    assert len(set(values)) == len(values)
    assert all(len(v) == 43 and not v.startswith("-") for v in values)
    assert not any(v in repr(one) or v in str(one) for v in env.values())
    text = env_file_text(env)
    assert text.splitlines() == [f"{k}={v}" for k, v in env.items()]


@pytest.mark.parametrize("value", ["", "two words", "quote'd", "$HOME", "a#b", "back\\slash"])
def test_env_file_refuses_values_a_shell_would_read_otherwise(value: str) -> None:
    with pytest.raises(ValueError, match="QUANTARB_X"):
        env_file_text({"QUANTARB_X": value})


def test_write_file_is_private_from_the_first_byte_even_over_a_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "w.toml.env"
    target.write_text("old\n")
    os.chmod(target, 0o644)
    write_file(target, "NAME=value\n", mode=0o600)
    assert target.read_text() == "NAME=value\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["w.toml.env"]  # no temp file left behind


def test_children_get_the_secrets_in_their_environment_never_on_their_command_line(tmp_path: Path) -> None:
    secrets = WorldSecrets.generate()
    opts = WorldOptions(config_out=tmp_path / "w.toml", seed=11)
    children = child_argvs(opts, epoch_ms=1_796_000_000_000, listener_url="http://127.0.0.1:9")
    assert [c.name for c in children] == ["okx", "binance-spot", "binance-usdm", "mt5"]
    for child in children:
        assert not any(v in arg for v in secrets.env().values() for arg in child.argv)
        assert child.argv[child.argv.index("--epoch-ms") + 1] == "1796000000000"
        assert child.argv[child.argv.index("--seed") + 1] == "11"
    env = child_env(secrets, {"PATH": "/bin", "QUANTARB_OKX_API_KEY": "the-operators-real-key",
                              "QUANTARB_STRATEGY__THRESHOLD_BPS": "3"})
    assert env["QUANTARB_OKX_API_KEY"] == secrets.okx_api_key
    assert "QUANTARB_STRATEGY__THRESHOLD_BPS" not in env and env["PATH"] == "/bin"
    assert opts.env_out == tmp_path / "w.toml.env" and opts.ledger_path == tmp_path / "w.db"

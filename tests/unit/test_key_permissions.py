"""The key-permission parsers `quantarb doctor` relies on: OKX `account/config` and Binance
`apiRestrictions`. The documented answers parse; anything else is the parser's own error,
never another exception and never a half-read answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchanges.binance import endpoints
from exchanges.binance.account import SPOT_HOST, ApiRestrictions, parse_api_restrictions, restrictions_url
from exchanges.binance.parsers import ParseError
from exchanges.okx.account import AccountConfig, parse_account_config
from exchanges.okx.parsers import OkxParseError

# The documented example of GET /api/v5/account/config (fields the parser ignores included).
OKX_CONFIG = {
    "acctLv": "2", "acctStpMode": "cancel_maker", "autoLoan": False, "ctIsoMode": "automatic",
    "enableSpotBorrow": False, "greeksType": "PA", "ip": "", "kycLv": "2", "label": "v5 test", "level": "Lv1",
    "levelTmp": "", "liquidationGear": "-1", "mainUid": "44705892343619584", "mgnIsoMode": "automatic",
    "opAuth": "0", "perm": "read_only,trade", "posMode": "net_mode", "roleType": "0",
    "spotBorrowAutoRepay": False, "spotOffsetType": "", "spotRoleType": "0", "spotTraderInsts": [],
    "traderInsts": [], "type": "0", "uid": "44705892343619584",
}
# The documented example of GET /sapi/v1/account/apiRestrictions.
BINANCE_RESTRICTIONS = {
    "ipRestrict": False, "createTime": 1698645219000, "enableReading": True, "enableWithdrawals": False,
    "enableInternalTransfer": True, "enableMargin": False, "enableFutures": False, "permitsUniversalTransfer": True,
    "enableVanillaOptions": False, "enableFixApiTrade": False, "enableFixReadOnly": True,
    "enableSpotAndMarginTrading": False, "enablePortfolioMarginTrading": True,
}


def test_okx_account_config_parses_the_documented_answer() -> None:
    found = parse_account_config([OKX_CONFIG])
    assert found == AccountConfig(perms=frozenset({"read_only", "trade"}), account_level="2",
                                  position_mode="net_mode")
    assert found.can_trade and not found.can_withdraw and found.derivatives
    withdraw = parse_account_config([{**OKX_CONFIG, "perm": "read_only,trade,withdraw", "acctLv": "1"}])
    assert withdraw.can_withdraw and not withdraw.derivatives
    assert not parse_account_config([{**OKX_CONFIG, "perm": "read_only"}]).can_trade


@pytest.mark.parametrize(("change", "reason"), [
    ({"perm": "read_only,fly"}, "perm 'read_only,fly'"),
    ({"perm": ""}, "perm ''"),
    ({"perm": 7}, "perm is not a string"),
    ({"acctLv": "9"}, "acctLv '9'"),
    ({"posMode": "both"}, "posMode 'both'"),
])
def test_okx_account_config_refuses_what_it_cannot_read(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(OkxParseError, match=reason):
        parse_account_config([{**OKX_CONFIG, **change}])
    with pytest.raises(OkxParseError, match="one object"):
        parse_account_config([OKX_CONFIG, OKX_CONFIG])


def test_binance_restrictions_parse_the_documented_answer() -> None:
    found = parse_api_restrictions(json.dumps(BINANCE_RESTRICTIONS).encode())
    assert found == ApiRestrictions(reading=True, spot_trading=False, futures=False, withdrawals=False,
                                    ip_restricted=False)
    assert not found.can_trade("spot") and not found.can_trade("usdm")
    both = parse_api_restrictions(json.dumps({**BINANCE_RESTRICTIONS, "enableFutures": True}))
    assert both.can_trade("usdm") and not both.can_trade("spot")
    with pytest.raises(ParseError, match="enableWithdrawals"):
        parse_api_restrictions(json.dumps({k: v for k, v in BINANCE_RESTRICTIONS.items() if k != "enableWithdrawals"}))
    with pytest.raises(ParseError, match="Expected `bool`"):
        parse_api_restrictions(json.dumps({**BINANCE_RESTRICTIONS, "enableFutures": "yes"}))


def test_binance_restrictions_are_asked_where_the_wallet_api_lives() -> None:
    assert restrictions_url(endpoints.production("spot"), is_testnet=False) == SPOT_HOST
    assert restrictions_url(endpoints.production("usdm"), is_testnet=False) == SPOT_HOST  # /sapi lives on the spot host
    assert restrictions_url(endpoints.testnet("usdm"), is_testnet=True) is None
    assert restrictions_url(endpoints.testnet("spot"), is_testnet=False) is None
    sim = endpoints.loopback("usdm", "http://127.0.0.1:9")
    assert restrictions_url(sim, is_testnet=False) == "http://127.0.0.1:9"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
okx_rows = st.fixed_dictionaries({}, optional={
    "perm": st.sampled_from(["read_only", "read_only,trade", "trade,withdraw", "", ",", "x"]) | json_values,
    "acctLv": st.sampled_from(["1", "2", "3", "4", "5", ""]) | json_values,
    "posMode": st.sampled_from(["net_mode", "long_short_mode", ""]) | json_values,
})


@settings(max_examples=300)
@given(st.lists(okx_rows, max_size=2) | json_values)
def test_okx_account_config_never_raises_anything_else(data: Any) -> None:
    try:
        found = parse_account_config(data)
    except OkxParseError:
        return
    assert found.perms and found.perms <= {"read_only", "trade", "withdraw"}
    assert found.account_level in {"1", "2", "3", "4"} and found.position_mode in {"net_mode", "long_short_mode"}


binance_bodies = st.fixed_dictionaries({}, optional={
    key: st.booleans() | json_values
    for key in ("ipRestrict", "enableReading", "enableWithdrawals", "enableSpotAndMarginTrading", "enableFutures")
}).map(lambda d: json.dumps(d).encode())


@settings(max_examples=300)
@given(binance_bodies | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_binance_restrictions_never_raise_anything_else(raw: bytes) -> None:
    try:
        found = parse_api_restrictions(raw)
    except ParseError:
        return
    assert all(isinstance(getattr(found, f), bool) for f in ("reading", "spot_trading", "futures", "withdrawals",
                                                              "ip_restricted"))

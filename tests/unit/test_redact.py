"""engine.redact: credentials out of the URLs `config show` prints, and nothing else touched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.redact import is_sensitive, redact_config, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://ws.okx.com:8443/ws/v5/public", "wss://ws.okx.com:8443/ws/v5/public"),
        ("https://user:pw@proxy.example:3128/x", "https://***@proxy.example:3128/x"),
        ("https://onlyatoken@host/x", "https://***@host/x"),
        ("https://h/p?a=1&api_key=K&b=2", "https://h/p?a=1&api_key=***&b=2"),
        ("https://h/p?Signature=S&X-Amz-Credential=C&sessionToken=T", "https://h/p?Signature=***&X-Amz-Credential=***&sessionToken=***"),
        ("https://h/p?password=&flag", "https://h/p?password=&flag"),  # nothing to hide
        ("https://h/p#access_token=T&state=s", "https://h/p#access_token=***&state=s"),
        ("https://h/p?token=a=b", "https://h/p?token=***"),
        ("https://u:p@h", "https://***@h"),
        ("https://h/a@b?x=1", "https://h/a@b?x=1"),  # an @ in the path is not userinfo
        ("~/.local/share/quantarb/ledger.db", "~/.local/share/quantarb/ledger.db"),
        ("not a url: key=value", "not a url: key=value"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_config_walks_plain_data() -> None:
    doc = {"a": ["https://u:p@h/", 1, None], "b": {"c": "https://h/?secret=s"}, "d": 2.5}
    assert redact_config(doc) == {"a": ["https://***@h/", 1, None], "b": {"c": "https://h/?secret=***"}, "d": 2.5}


# Nothing else uses capitals; U and P start only the user and the password, so neither can
# turn up inside a parameter's value.
_secret = st.text("ABCDEFGHJKMNQRSTWXYZ0123456789", min_size=12, max_size=24)
_word = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=10)
_sensitive = st.sampled_from(["key", "apikey", "api_key", "secret", "token", "signature", "passphrase", "password",
                              "auth", "X-Api-Key", "listenKey"])


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "ws", "wss"]),
    user=st.one_of(st.none(), _secret),
    password=st.one_of(st.none(), _secret),
    host=_word,
    path=st.lists(_word, max_size=3),
    params=st.lists(st.tuples(st.one_of(_sensitive, _word), _secret, st.booleans()), max_size=4),
    fragment=st.booleans(),
)
def test_property_no_credential_survives(
    scheme: str, user: str | None, password: str | None, host: str, path: list[str],
    params: list[tuple[str, str, bool]], fragment: bool,
) -> None:
    if user is None:
        password = None
    else:
        user = "U" + user
        password = None if password is None else "P" + password
    userinfo = "" if user is None else user + ("" if password is None else ":" + password) + "@"
    query = "&".join(f"{k}={v}" for k, v, _ in params)
    url = f"{scheme}://{userinfo}{host}/{'/'.join(path)}" + (("#" if fragment else "?") + query if query else "")
    shown = redact_url(url)
    for secret in (user, password):
        if secret is not None:
            assert secret not in shown
    for name, value, _ in params:
        if any(s in name.lower() for s in ("key", "secret", "token", "sig", "pass", "auth")) or is_sensitive(name):
            assert f"{name}={value}" not in shown
        else:
            assert f"{name}={value}" in shown  # everything else stays readable
    assert shown.startswith(f"{scheme}://") and host in shown


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_property_never_raises(text: str) -> None:
    assert isinstance(redact_url(text), str)
    assert isinstance(redact_url("https://" + text), str)

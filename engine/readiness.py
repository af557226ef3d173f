"""Whether a loaded configuration can start: the secrets it needs and what would stop it.

`quantarb config check` reports this so that it never calls a config fine that the engine then
refuses (the engine exits 3 on the first missing MT5 secret). It lists only the secrets this
config needs, with present or missing and where a present one came from; never a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.settings import FILE_SUFFIX, SECRET_ENV_VARS, LoadedConfig, mt5_secret_env_var


@dataclass(frozen=True, slots=True)
class SecretNeed:
    """One secret the config uses: `required` ones must be set for the engine to start."""

    variable: str
    purpose: str
    required: bool
    present: bool
    source: str | None  # the variable that supplied it (`NAME` or `NAME_FILE`), when present
    when_missing: str  # what happens without it

    def to_json(self) -> dict[str, object]:
        return {"variable": self.variable, "purpose": self.purpose, "required": self.required,
                "present": self.present, "source": self.source, "when_missing": self.when_missing}


_EXCHANGE_KEYS = {
    "okx": ("okx_api_key", "okx_api_secret", "okx_api_passphrase"),
    "binance": ("binance_api_key", "binance_api_secret"),
}


def secret_needs(loaded: LoadedConfig) -> list[SecretNeed]:
    """The secrets this config uses, in the order they matter: MT5 terminals, exchange keys
    (only for live execution), the admin token."""
    cfg = loaded.config
    secrets = loaded.secrets
    simulated = loaded.is_demo or cfg.demo.enabled
    needs: list[SecretNeed] = []
    if cfg.venues.mt5 is not None:
        for terminal in cfg.venues.mt5.terminals:
            var = mt5_secret_env_var(terminal)
            needs.append(SecretNeed(
                variable=var,
                purpose=f"HMAC secret of MT5 terminal {terminal}",
                required=not simulated,
                present=secrets.mt5_secret(terminal) is not None,
                source=secrets.sources.get(var),
                when_missing=("the simulated terminal gets one generated for the run" if simulated
                              else f"the engine does not start; set {var} or {var}{FILE_SUFFIX}"),
            ))
    if cfg.engine.execution == "live" and not loaded.is_demo:
        for venue in cfg.venues.enabled():
            for attr in _EXCHANGE_KEYS.get(venue, ()):
                var = SECRET_ENV_VARS[attr]
                needs.append(SecretNeed(
                    variable=var, purpose=f"{venue} trading credentials", required=True,
                    present=getattr(secrets, attr) is not None, source=secrets.sources.get(var),
                    when_missing="live orders cannot be signed",
                ))
    admin = SECRET_ENV_VARS["admin_token"]
    needs.append(SecretNeed(
        variable=admin, purpose="bearer token of the operator API", required=False,
        present=secrets.admin_token is not None, source=secrets.sources.get(admin),
        when_missing="one is generated and kept next to the ledger (mode 0600)",
    ))
    return needs


def start_problems(loaded: LoadedConfig) -> list[str]:
    """Why the engine would refuse this config: each required secret that is not set, one line
    each (`VAR: missing (purpose); what follows`), and each alert URL apprise cannot use;
    empty when it can start."""
    problems = [f"{need.variable}: missing ({need.purpose}); {need.when_missing}"
                for need in secret_needs(loaded) if need.required and not need.present]
    if loaded.config.alerts.urls:  # the engine refuses a URL apprise cannot use (apprise loads lazily)
        from engine.alerts import url_problems

        problems += url_problems(loaded.config.alerts)
    return problems

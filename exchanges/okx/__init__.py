"""OKX v5 order routing: signing, endpoints, parsers, the error map, the gateway and the private stream."""

from exchanges.okx.auth import OkxCredentials
from exchanges.okx.gateway import ConfigMismatch, OkxGateway, OkxGatewayConfig

__all__ = ["ConfigMismatch", "OkxCredentials", "OkxGateway", "OkxGatewayConfig"]

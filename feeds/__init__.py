"""Market data in: OKX and Binance public WebSocket + REST fallback, normalizers, feed health."""

"""Trading on OKX and Binance: signing, place/cancel/query, private order streams."""

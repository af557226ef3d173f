"""The embedded default world: seeded synthetic market, simulated venues, paper fills.

It implements venue behaviour on its own and imports only `core`.
"""

"""Pure domain and decisions: no I/O, time from an injected Clock, randomness from a seed."""

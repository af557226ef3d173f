"""The MT5 side: protocol models, signature check, embedded listener, command queue, gateway."""

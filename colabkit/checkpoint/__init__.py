"""Checkpoints that survive the end of a session: store, state codec, writer process, schedule."""

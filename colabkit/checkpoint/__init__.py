"""Checkpoints that survive the end of a session: see checkpointer.py for how the parts fit."""

"""Colab error types (colabtools: google/colab/errors.py)."""


class Error(Exception):
    """Base class for all Colab errors."""

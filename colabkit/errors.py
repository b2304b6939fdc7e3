"""The errors and warnings colabkit shows a person: one paragraph that says what to do."""


class ColabkitError(Exception):
    """A problem the user can fix; its message says how. Shown without a traceback in IPython."""

    def _render_traceback_(self):
        # IPython prints these lines instead of a traceback through colabkit's internals.
        return [f"ColabkitError: {self}"]


class ColabkitWarning(UserWarning):
    """Something worth knowing that did not stop the work (a fallback, a limit close by)."""


def warn(message: str) -> None:
    """Warn with the location of the user's code that led here, not of colabkit's own lines."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 2  # stacklevel 2 is warn's caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ColabkitWarning, stacklevel=level)


def say(message: str) -> None:
    """Tell the person now, in the cell's output: for what must not be missed (a fallback that
    changes what is saved or resumed). Unlike a warning, no filter hides it."""
    import sys

    print(f"colabkit: {message}", file=sys.stderr, flush=True)

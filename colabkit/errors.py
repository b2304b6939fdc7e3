"""The errors and warnings colabkit shows a person: one paragraph that says what to do."""


class ColabkitError(Exception):
    """A problem the user can fix; its message says how. Magics show it without a traceback."""


class ColabkitWarning(UserWarning):
    """Something worth knowing that did not stop the work (a fallback, a limit close by)."""

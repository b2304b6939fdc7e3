"""Colab Secrets (colabtools: google/colab/userdata.py): the same request, replies and errors."""

import threading

from google.colab import _message, errors

SECRETS = {}  # name -> (value, notebook has access); answered by the fake browser below


class NotebookAccessError(Exception):
    """Exception thrown when the current notebook doesn't have access to the requested secret."""

    def __init__(self, key):
        super().__init__(f"Notebook does not have access to secret {key}")


class SecretNotFoundError(errors.Error):
    """Exception thrown when the requested secret is not found."""

    def __init__(self, key):
        super().__init__(f"Secret {key} does not exist.")


_userdata_lock = threading.Lock()


def _answer(request):
    if request["key"] not in SECRETS:
        return {"exists": False}
    value, access = SECRETS[request["key"]]
    return {"exists": True, "access": access, "payload": value if access else ""}


_message.FRONTEND.setdefault("GetSecret", _answer)


def get(key):
    """Fetches the value for specified secret keys."""
    with _userdata_lock:
        resp = _message.blocking_request("GetSecret", request={"key": key}, timeout_sec=None)
    if not resp.get("exists", False):
        raise SecretNotFoundError(key)
    if not resp.get("access", False):
        raise NotebookAccessError(key)
    return resp.get("payload", "")

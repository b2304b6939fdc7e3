"""Colab's kernel-to-browser messages (colabtools: google/colab/_message.py).

The real module sends a `colab_request` on iopub and polls stdin for a `colab_reply`. Here the
browser is `FRONTEND`: request type -> function(request) -> reply data. A missing handler acts as a
browser that never answers: None, as the real one returns after its timeout. A handler that raises
stands for an error reply: MessageError, as the real one raises.
"""

import uuid

from google.colab import errors

FRONTEND = {}
SENT = []  # (request_type, request) of every request, for tests to read


class MessageError(errors.Error):
    """Thrown on error response from frontend."""


def send_request(request_type, request_body, parent=None):
    """Sends the given message to the frontend."""
    SENT.append((request_type, request_body))
    return str(uuid.uuid4())


def blocking_request(request_type, request="", timeout_sec=5, parent=None):
    """Calls the front end with a request, and blocks until a reply is received."""
    send_request(request_type, request, parent=parent)
    handler = FRONTEND.get(request_type)
    if handler is None:
        return None
    try:
        return handler(request)
    except Exception as exc:  # an error reply from the browser
        raise MessageError(str(exc)) from None

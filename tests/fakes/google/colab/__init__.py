"""A faithful fake of google.colab for tests outside Colab.

Same module names, function signatures, messages and exception types as googlecolab/colabtools
(drive.py, _message.py, output/_js.py, output/_util.py, userdata.py). What Colab's browser side
would answer is set by tests in `_message.FRONTEND`; what Drive would do in `drive.SCENARIO`.
"""

from google.colab import _message, drive, errors, output, userdata  # noqa: F401

__version__ = "0.0.1a2+colabkit-fake"

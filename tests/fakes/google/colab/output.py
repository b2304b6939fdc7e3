"""Output helpers (colabtools: google/colab/output/_js.py, _util.py, _tags.py).

eval_js sends an "execute" request to the browser, as the real one does; serve_kernel_port_as_iframe
emits the same JavaScript as the real one (google.colab.kernel.proxyPort, then an iframe).
"""

import contextlib
import json

from google.colab import _message


def eval_js(script, ignore_result=False, timeout_sec=None):
    """Evaluates the Javascript within the context of the current notebook portion."""
    if ignore_result:
        _message.send_request("execute", {"script": script})
        return None
    return _message.blocking_request("execute", request={"script": script}, timeout_sec=timeout_sec)


def serve_kernel_port_as_iframe(port, path="/", width="100%", height="400", cache_in_notebook=False):
    """Displays an iframe in the output to a port on the kernel."""
    from IPython import display

    code = """(async (port, path, width, height, cache, element) => {
    if (!google.colab.kernel.accessAllowed && !cache) {
      return;
    }
    element.appendChild(document.createTextNode(''));
    const url = await google.colab.kernel.proxyPort(port, {cache});
    const iframe = document.createElement('iframe');
    iframe.src = new URL(path, url).toString();
    iframe.height = height;
    iframe.width = width;
    iframe.style.border = 0;
    iframe.allow = [
        'accelerometer', 'autoplay', 'camera', 'clipboard-read', 'clipboard-write',
        'gyroscope', 'magnetometer', 'microphone', 'serial', 'usb', 'xr-spatial-tracking',
    ].join('; ');
    element.appendChild(iframe);
  })""" + "({port}, {path}, {width}, {height}, {cache}, window.element)".format(
        port=port, path=json.dumps(path), width=json.dumps(width), height=json.dumps(height),
        cache=json.dumps(cache_in_notebook))
    display.display(display.Javascript(code))


def clear(wait=False, output_tags=()):
    """Clears the output of the current cell (a no-op outside a browser)."""


@contextlib.contextmanager
def use_tags(tags, append=True):
    """Tags outputs displayed inside this block (no-op here)."""
    yield

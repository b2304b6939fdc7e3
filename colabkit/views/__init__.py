"""How a person sees the watcher: an ipywidgets panel, a served panel for Colab, or plain text."""

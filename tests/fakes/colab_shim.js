// The browser half of the fake: what Colab's output frame offers to output JavaScript.
// proxyPort(port) answers with the kernel's port on this machine, as Colab's proxy would
// (there it is an https URL on *.colab.googleusercontent.com).
window.google = window.google || {};
window.google.colab = window.google.colab || {};
window.google.colab.kernel = {
  accessAllowed: true,
  proxyPort: async (port, options) => `http://127.0.0.1:${port}/`,
};

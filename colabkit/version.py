"""colabkit's version: one place, read by the package, its wheel and every checkpoint's manifest."""

VERSION = "0.1.0"

"""The package's version, in one place (``pyproject.toml`` holds the same string; a test checks)."""

VERSION = "0.1.0"

"""voicecheck: tell whether the voice in a recorded call is a real person or an AI clone."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voicecheck")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]

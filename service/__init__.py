"""The Flask application of voicecheck (HTTP API and web console)."""

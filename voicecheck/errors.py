"""The one exception hierarchy of voicecheck.

Every error carries an HTTP ``status`` and a stable machine-readable ``code`` so that
the command line, the API and the web console report it the same way.
"""

from __future__ import annotations


class VoiceCheckError(Exception):
    """Base class of every error voicecheck raises on purpose."""

    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_problem(self) -> dict[str, object]:
        """Return the error as an RFC 9457 problem object."""
        problem: dict[str, object] = {
            "type": f"https://voicecheck.invalid/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.message,
            "code": self.code,
        }
        for key, value in self.details.items():
            if value is not None:
                problem[key] = value.to_dict() if hasattr(value, "to_dict") else value
        return problem


class AudioError(VoiceCheckError):
    """The input cannot be analysed as audio."""

    status = 422
    code = "invalid_audio"
    title = "Invalid audio"


class UnsupportedFormatError(AudioError):
    """The input is not audio, or not in a format voicecheck decodes."""

    status = 415
    code = "unsupported_format"
    title = "Unsupported media type"


class CorruptAudioError(AudioError):
    """The input looks like audio but is truncated or damaged."""

    code = "corrupt_audio"
    title = "Corrupt audio"


class EmptyAudioError(AudioError):
    """The input holds no samples at all."""

    code = "empty_audio"
    title = "Empty audio"


class AudioTooShortError(AudioError):
    """The recording is shorter than the minimum."""

    code = "audio_too_short"
    title = "Audio too short"


class AudioTooLongError(AudioError):
    """The recording is longer than the configured maximum."""

    status = 413
    code = "audio_too_long"
    title = "Audio too long"


class NoSpeechError(AudioError):
    """The recording is silent or holds too little speech."""

    code = "no_speech"
    title = "No speech"


class InvalidSamplesError(AudioError):
    """The recording holds NaN or infinite samples."""

    code = "invalid_samples"
    title = "Invalid samples"


class UnsupportedLayoutError(AudioError):
    """The sample rate or channel count is outside what voicecheck accepts."""

    code = "unsupported_layout"
    title = "Unsupported sample rate or channel count"


class ChannelError(VoiceCheckError):
    """A phone-channel simulation was asked for something it cannot do."""

    status = 400
    code = "invalid_channel"
    title = "Invalid channel"


class ModelError(VoiceCheckError):
    """A model file is missing, damaged, untrusted or does not match this version."""

    status = 500
    code = "model_error"
    title = "Model error"


class ManifestError(VoiceCheckError):
    """The data manifest is invalid."""

    status = 400
    code = "invalid_manifest"
    title = "Invalid data manifest"


class BatchOutputError(VoiceCheckError):
    """The batch output cannot be resumed, or cannot be written."""

    status = 409
    code = "batch_output_mismatch"
    title = "Batch output mismatch"


class BatchInputError(VoiceCheckError):
    """The batch input is neither a folder nor a readable list of paths."""

    status = 400
    code = "invalid_batch_input"
    title = "Invalid batch input"


class ClusterError(VoiceCheckError):
    """The Dask cluster cannot be reached or cannot run voicecheck."""

    status = 503
    code = "cluster_unavailable"
    title = "Cluster unavailable"

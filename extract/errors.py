"""One error type for everything that can go wrong with one video, so one video never stops a run."""


class VideoError(Exception):
    """A video that could not be used; `stage` says where it failed (probe, decode, audio, encode)."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def describe_av_error(error: Exception) -> str:
    """FFmpeg's own words without the errno and the repeated file name: the caller names the file."""
    return getattr(error, "strerror", None) or str(error).splitlines()[0] or error.__class__.__name__

"""gais-pipe: text-to-video retrieval with frame-level gated audio-visual fusion (GAIS)."""

__version__ = "0.1.0"

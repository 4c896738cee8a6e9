"""plateau-challenge: activation plateaus as a benchmark."""

__version__ = "0.1.0"

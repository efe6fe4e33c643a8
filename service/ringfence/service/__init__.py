"""ringfence service: links accounts run by one operator and scores requests for rate limiters."""

__version__ = "0.1.0"

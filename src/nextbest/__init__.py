"""nextbest: an open-source next-best-action service for e-commerce marketing, with experimentation built in."""

__version__ = "0.1.0"

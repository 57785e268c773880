"""nextbest: open-source next-best-action for e-commerce marketing, with experimentation built in."""

__version__ = "0.1.0"

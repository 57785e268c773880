"""The golden corpus of the decision pipeline (see README.md)."""

"""Headstart: retrain an image classifier, prove the pre-trained head start, promote only winners."""

__version__ = "0.1.0"

"""Corolla: train, serve and deploy image classifiers; a drop-in TensorFlow Serving replacement."""

__version__ = "0.1.0"

"""digitrec: handwritten digit recognition, from MNIST to real handwriting."""

__version__ = "0.1.0"

"""Neural-network layers (``fl.nn``), Gluon-compatible."""

from .block import Block, HybridBlock, HybridSequential, Sequential
from .layers import Activation, Dense, Dropout, Flatten

__all__ = ["Block", "HybridBlock", "Sequential", "HybridSequential", "Dense",
           "Activation", "Dropout", "Flatten"]

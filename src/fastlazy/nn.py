"""Neural-network layers (``fl.nn``), Gluon-compatible."""

from .block import Block, HybridBlock, HybridSequential, Sequential
from .conv_layers import (AvgPool2D, BatchNorm, Conv2D, GlobalAvgPool2D,
                          GlobalMaxPool2D, LayerNorm, MaxPool2D)
from .layers import Activation, Dense, Dropout, Flatten

__all__ = ["Block", "HybridBlock", "Sequential", "HybridSequential", "Dense",
           "Activation", "Dropout", "Flatten", "Conv2D", "MaxPool2D",
           "AvgPool2D", "GlobalMaxPool2D", "GlobalAvgPool2D", "BatchNorm",
           "LayerNorm"]

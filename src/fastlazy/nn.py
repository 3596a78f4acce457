"""Neural-network layers (``fl.nn``), Gluon-compatible."""

from .block import Block, HybridBlock, HybridSequential, Sequential
from .containers import (Concurrent, HybridConcurrent, HybridLambda,
                         Identity, Lambda)
from .conv_layers import (AvgPool2D, BatchNorm, Conv2D, GlobalAvgPool2D,
                          GlobalMaxPool2D, LayerNorm, MaxPool2D)
from .layers import (ELU, GELU, SELU, Activation, Dense, Dropout, Flatten,
                     LeakyReLU, PReLU, Swish)

__all__ = ["Block", "HybridBlock", "Sequential", "HybridSequential", "Dense",
           "Activation", "Dropout", "Flatten", "Conv2D", "MaxPool2D",
           "AvgPool2D", "GlobalMaxPool2D", "GlobalAvgPool2D", "BatchNorm",
           "LayerNorm", "HybridConcurrent", "Concurrent", "Identity",
           "HybridLambda", "Lambda", "LeakyReLU", "PReLU", "ELU", "SELU",
           "GELU", "Swish"]

"""Initializers (``fl.init``): see :mod:`fastlazy.initializers`."""

from .initializers import (Constant, InitDesc, Initializer, MSRAPrelu, Normal,
                           One, Uniform, Xavier, Zero, create)

__all__ = ["Initializer", "InitDesc", "Uniform", "Normal", "Constant", "Zero",
           "One", "Xavier", "MSRAPrelu", "create"]

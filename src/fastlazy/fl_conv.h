/* Compatibility name, removed once the plan calls the table: the
 * convolution kernels are in the table of kernels/fl_kernels.h; this path
 * is what the Cython `cdef extern from "fl_conv.h"` lines still name. */
#include "kernels/fl_kernels.h"

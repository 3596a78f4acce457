/* Compatibility name, removed once the plan calls the table: the kernels'
 * header is kernels/fl_kernels.h; this path is what the Cython
 * `cdef extern from "fl_kernels.h"` lines still name. */
#include "kernels/fl_kernels.h"

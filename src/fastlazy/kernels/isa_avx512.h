/*
 * isa_avx512.h -- descriptor of the AVX-512 level (x86-64-v4): 32 vector
 * registers of 64 bytes.  Included by fl_kernels.c before the bodies of
 * this level; everything the bodies need that differs between levels is
 * here, the rest (element and vector types, lanes, panel width) is derived
 * from it in instance.inc.h.
 */
#define FL_ISA v4                 /* function-name suffix (tools/check_isa.py
                                     allows AVX only in _v3/_v4 functions) */
#define FL_ISA_LEVEL 4
#define FL_ISA_NAME "AVX-512 (x86-64-v4)"
/* per-function target, never -march: the extension runs on any x86-64 and
 * calls these only after fl_kernels_init() saw the CPU support them */
#define FL_ATTR __attribute__((target("arch=x86-64-v4")))
#define FL_VBYTES 64              /* bytes per vector register */

/* Packed kernel: MR rows x 2 vectors of accumulators (24 registers) plus 2
 * weight vectors and a broadcast fit the 32 registers. */
#define FL_MR 12
/* bfloat16 weights: 12 rows x 2 accumulators + 4 widened weights + the
 * mask + a broadcast fit the 32 registers too */
#define FL_BF_MR 12

/* Small dense kernel, by tile height 8, 4, 2 and 1 rows: vectors per row of
 * the wide tile, and partial sums along k of the one-vector (narrow) tile
 * -- the same register budget, so the same numbers. */
#define FL_SMALL_W8 2
#define FL_SMALL_W4 4
#define FL_SMALL_W2 8
#define FL_SMALL_W1 8

/* Depthwise convolution: its vector width, and vectors per output row of
 * its 2-row tile.  32-byte vectors: on AMD Zen 4 (512-bit operations split
 * in two) they were faster at every MobileNet layer, 1.1-2x -- rows of 56,
 * 28, 14, 7 waste a part of a 16-float vector and a stride-2 row of 28
 * fits no 64-byte even/odd split; a CPU with two 512-bit FMA units may
 * prefer 64.  2 x 2 accumulators: 2 x 4 measured 20% slower, 2 x 1 the
 * same. */
#define FL_DW_VBYTES 32
#define FL_DW_NV 2

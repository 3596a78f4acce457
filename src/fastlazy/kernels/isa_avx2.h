/*
 * isa_avx2.h -- descriptor of the AVX2+FMA level (x86-64-v3): 16 vector
 * registers of 32 bytes.  See isa_avx512.h for what each name means.
 */
#define FL_ISA v3
#define FL_ISA_LEVEL 3
#define FL_ISA_NAME "AVX2+FMA (x86-64-v3)"
#define FL_ATTR __attribute__((target("arch=x86-64-v3")))
#define FL_VBYTES 32

/* 6 rows x 2 accumulators + 2 weights + broadcast: 15 of 16 registers */
#define FL_MR 6
/* bfloat16 weights: 5 rows x 2 accumulators + 2 weights widened + the
 * mask + a broadcast; with 6 rows GCC kept one accumulator on the stack
 * and the tile ran at 0.73x the float32 kernel's speed (5 rows: 1.0-1.06x,
 * 4 rows: 0.96-1.01x, 1024 x 1024 x 128 on Zen 3) */
#define FL_BF_MR 5

#define FL_SMALL_W8 1
#define FL_SMALL_W4 2
#define FL_SMALL_W2 4
#define FL_SMALL_W1 8

/* depthwise: 2 rows x 2 vectors of accumulators + 9 weights: 13 of 16
 * registers */
#define FL_DW_VBYTES 32
#define FL_DW_NV 2

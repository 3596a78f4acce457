/*
 * isa_base.h -- descriptor of the baseline level the wheel is compiled for
 * (x86-64: SSE2, 16 registers of 16 bytes; other CPUs: the compiler's
 * 16-byte vectors).  See isa_avx512.h for what each name means.
 */
#define FL_ISA base
#define FL_ISA_LEVEL 0
#define FL_ISA_NAME "baseline"
#define FL_ATTR                   /* the compiler's flags as they are */
#define FL_VBYTES 16

#define FL_MR 6
#define FL_BF_MR 5                /* as AVX2: 16 registers */

#define FL_SMALL_W8 1
#define FL_SMALL_W4 2
#define FL_SMALL_W2 4
#define FL_SMALL_W1 4

#define FL_DW_VBYTES 16
#define FL_DW_NV 2

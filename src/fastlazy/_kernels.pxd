# Declarations of the C kernels in fl_kernels.h: noexcept nogil, raw
# pointers, no Python objects, no allocation.

cdef extern from "fl_kernels.h" nogil:
    ctypedef Py_ssize_t fl_idx

    enum:
        FL_ACT_NONE
        FL_ACT_RELU
        FL_ACT_SIGMOID
        FL_ACT_TANH
        FL_ACT_SOFTRELU
        FL_ACT_SOFTSIGN
        FL_ACT_GELU
        FL_ACT_SILU

    ctypedef struct fl_kernel_table:
        void (*dense_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const float *wt, const float *b,
                          float *y, fl_idx ldy, int act) noexcept nogil
        void (*dense_f64)(fl_idx n, fl_idx K, fl_idx M, const double *x,
                          fl_idx ldx, const double *wt, const double *b,
                          double *y, fl_idx ldy, int act) noexcept nogil
        void (*bias_act_f32)(fl_idx n, fl_idx M, float *y, fl_idx ldy,
                             const float *b, int act) noexcept nogil
        void (*bias_act_f64)(fl_idx n, fl_idx M, double *y, fl_idx ldy,
                             const double *b, int act) noexcept nogil
        void (*gemm_packed_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                                fl_idx ldx, const float *pk, fl_idx p0,
                                fl_idx p1, const float *b, float *y,
                                fl_idx ldy, int act) noexcept nogil
        void (*gemm_packed_f64)(fl_idx n, fl_idx K, fl_idx M,
                                const double *x, fl_idx ldx, const double *pk,
                                fl_idx p0, fl_idx p1, const double *b,
                                double *y, fl_idx ldy, int act) noexcept nogil
        void (*pack_f32)(fl_idx K, fl_idx M, const float *wt,
                         float *pk) noexcept nogil
        void (*pack_f64)(fl_idx K, fl_idx M, const double *wt,
                         double *pk) noexcept nogil
        void (*gemm_ab_f32)(fl_idx M, fl_idx N, fl_idx K, const float *a,
                            fl_idx lda, const float *b, fl_idx ldb, float *c,
                            fl_idx ldc, float *buf) noexcept nogil
        void (*gemm_ab_f64)(fl_idx M, fl_idx N, fl_idx K, const double *a,
                            fl_idx lda, const double *b, fl_idx ldb,
                            double *c, fl_idx ldc, double *buf) noexcept nogil
        int nr_f32
        int nr_f64
        int mr

    fl_kernel_table fl_kt
    int fl_kernels_init(int level) noexcept
    const char *fl_kernels_isa() noexcept
    void fl_act_f32(float *y, fl_idx count, int act) noexcept nogil
    void fl_act_f64(double *y, fl_idx count, int act) noexcept nogil

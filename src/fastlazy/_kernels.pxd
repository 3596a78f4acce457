# Declarations of the C kernels (kernels/fl_kernels.h): one table of
# function pointers, filled for the CPU by fl_kernels_init; noexcept nogil,
# raw pointers, no Python objects, no allocation.

from libc.stdint cimport uint16_t, uint32_t


cdef extern from "kernels/fl_kernels.h" nogil:
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
        FL_ACT_RELU6

    ctypedef struct fl_kernel_table:
        # dense layers
        void (*dense_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const float *wt, const float *b,
                          float *y, fl_idx ldy, int act) noexcept nogil
        void (*dense_f64)(fl_idx n, fl_idx K, fl_idx M, const double *x,
                          fl_idx ldx, const double *wt, const double *b,
                          double *y, fl_idx ldy, int act) noexcept nogil
        void (*dense_dot_f32)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                              fl_idx ldx, const float *wm, const float *b,
                              float *y, fl_idx ldy, int act) noexcept nogil
        void (*dense_dot_f64)(fl_idx n, fl_idx K, fl_idx M,
                              const double *x, fl_idx ldx, const double *wm,
                              const double *b, double *y, fl_idx ldy,
                              int act) noexcept nogil
        void (*pack_rows_f32)(fl_idx K, fl_idx M, const float *wt,
                              float *wm) noexcept nogil
        void (*pack_rows_f64)(fl_idx K, fl_idx M, const double *wt,
                              double *wm) noexcept nogil
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
        # activations in place (relu and float32 sigmoid vectorised)
        void (*act_f32)(float *y, fl_idx n, int act) noexcept nogil
        void (*act_f64)(double *y, fl_idx n, int act) noexcept nogil
        # convolution
        void (*gemm_ab_f32)(fl_idx M, fl_idx N, fl_idx K, const float *a,
                            fl_idx lda, const float *b, fl_idx ldb, float *c,
                            fl_idx ldc, float *buf) noexcept nogil
        void (*gemm_ab_f64)(fl_idx M, fl_idx N, fl_idx K, const double *a,
                            fl_idx lda, const double *b, fl_idx ldb,
                            double *c, fl_idx ldc, double *buf) noexcept nogil
        size_t (*gemm_ab_buf_f32)(fl_idx K) noexcept nogil
        size_t (*gemm_ab_buf_f64)(fl_idx K) noexcept nogil
        void (*im2col_f32)(const float *x, fl_idx Cg, fl_idx H, fl_idx W,
                           fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                           fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw,
                           fl_idx OW, fl_idx oh0, fl_idx oh1, float *col,
                           fl_idx ldc) noexcept nogil
        void (*im2col_f64)(const double *x, fl_idx Cg, fl_idx H, fl_idx W,
                           fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                           fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw,
                           fl_idx OW, fl_idx oh0, fl_idx oh1, double *col,
                           fl_idx ldc) noexcept nogil
        void (*dwconv_f32)(const float *x, const float *w, float *y,
                           fl_idx C, fl_idx H, fl_idx W, fl_idx kh,
                           fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                           fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OH,
                           fl_idx OW, const float *scale, const float *shift,
                           int act, float *buf) noexcept nogil
        void (*dwconv_f64)(const double *x, const double *w, double *y,
                           fl_idx C, fl_idx H, fl_idx W, fl_idx kh,
                           fl_idx kw, fl_idx sh, fl_idx sw, fl_idx ph,
                           fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OH,
                           fl_idx OW, const double *scale,
                           const double *shift, int act,
                           double *buf) noexcept nogil
        size_t (*dwconv_buf_f32)(fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                                 fl_idx dh, fl_idx dw, fl_idx OH,
                                 fl_idx OW) noexcept nogil
        size_t (*dwconv_buf_f64)(fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                                 fl_idx dh, fl_idx dw, fl_idx OH,
                                 fl_idx OW) noexcept nogil
        void (*chan_epilogue_f32)(fl_idx O, fl_idx N, const float *src,
                                  fl_idx lds, float *dst, fl_idx ldd,
                                  const float *scale, const float *shift,
                                  int act) noexcept nogil
        void (*chan_epilogue_f64)(fl_idx O, fl_idx N, const double *src,
                                  fl_idx lds, double *dst, fl_idx ldd,
                                  const double *scale, const double *shift,
                                  int act) noexcept nogil
        # normalization and pooling
        void (*bn_coeffs_f32)(fl_idx C, const float *gamma, const float *beta,
                              const float *mean, const float *var,
                              const float *bias, double eps, float *scale,
                              float *shift) noexcept nogil
        void (*bn_coeffs_f64)(fl_idx C, const double *gamma,
                              const double *beta, const double *mean,
                              const double *var, const double *bias,
                              double eps, double *scale,
                              double *shift) noexcept nogil
        void (*chan_affine_f32)(fl_idx outer, fl_idx C, fl_idx inner,
                                const float *x, float *y, const float *scale,
                                const float *shift, int act) noexcept nogil
        void (*chan_affine_f64)(fl_idx outer, fl_idx C, fl_idx inner,
                                const double *x, double *y,
                                const double *scale, const double *shift,
                                int act) noexcept nogil
        void (*pool2d_f32)(const float *x, float *y, fl_idx C, fl_idx H,
                           fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                           fl_idx sw, fl_idx ph, fl_idx pw, fl_idx OH,
                           fl_idx OW, int is_max,
                           int count_include_pad) noexcept nogil
        void (*pool2d_f64)(const double *x, double *y, fl_idx C, fl_idx H,
                           fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh,
                           fl_idx sw, fl_idx ph, fl_idx pw, fl_idx OH,
                           fl_idx OW, int is_max,
                           int count_include_pad) noexcept nogil
        void (*layernorm_f32)(fl_idx outer, fl_idx C, fl_idx inner,
                              const float *x, float *y, const float *gamma,
                              const float *beta, double eps,
                              double *acc) noexcept nogil
        void (*layernorm_f64)(fl_idx outer, fl_idx C, fl_idx inner,
                              const double *x, double *y,
                              const double *gamma, const double *beta,
                              double eps, double *acc) noexcept nogil
        # int8 (kernels/qgemm.inc.h)
        void (*qpack)(fl_idx K, fl_idx M, const float *w, fl_idx sk,
                      fl_idx sm, signed char *pk, float *ws,
                      int *wsum) noexcept nogil
        void (*qrows)(fl_idx n, fl_idx K, const float *x, fl_idx ldx,
                      unsigned char *xq, fl_idx ldq, float *xs, int *xz,
                      float fscale, int fzp) noexcept nogil
        void (*qgemm)(fl_idx n, fl_idx K, fl_idx M, const unsigned char *xq,
                      fl_idx ldq, const float *xs, const int *xz,
                      const signed char *pk, fl_idx p0, fl_idx p1,
                      const float *ws, const int *wsum, const float *sh,
                      float *y, fl_idx ldy, int act) noexcept nogil
        void (*qim2col)(const unsigned char *xq, fl_idx C, fl_idx H,
                        fl_idx W, fl_idx kh, fl_idx kw, fl_idx sh, fl_idx sw,
                        fl_idx ph, fl_idx pw, fl_idx dh, fl_idx dw, fl_idx OW,
                        fl_idx p0, fl_idx p1, unsigned char *col, fl_idx ldq,
                        int pad) noexcept nogil
        void (*qdotpack)(fl_idx K, fl_idx M, const signed char *pk,
                         signed char *rw) noexcept nogil
        void (*qdot)(fl_idx n, fl_idx K, fl_idx M, const unsigned char *xq,
                     fl_idx ldq, const float *xs, const int *xz,
                     const signed char *rw, const float *ws, const int *wsum,
                     const float *sh, float *y, fl_idx ldy,
                     int act) noexcept nogil
        int q_dotk
        int q_nr
        int q_ks
        int q_esize
        int q_mr
        int q_level
        int q_wmax
        const char *q_isa
        # bfloat16 weights (kernels/dense_bf16.inc.h)
        void (*pack_bf16)(fl_idx K, fl_idx M, const uint16_t *wt,
                          uint32_t *pk) noexcept nogil
        void (*gemm_bf16)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                          fl_idx ldx, const uint32_t *pk, fl_idx p0,
                          fl_idx p1, const float *b, float *y, fl_idx ldy,
                          int act) noexcept nogil
        void (*gemm_bf16_dot)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                              fl_idx ldx, const uint32_t *pk, fl_idx p0,
                              fl_idx p1, const float *b, float *y,
                              fl_idx ldy, int act) noexcept nogil
        void (*gemm_bf16_emu)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                              fl_idx ldx, const uint32_t *pk, fl_idx p0,
                              fl_idx p1, const float *b, float *y,
                              fl_idx ldy, int act) noexcept nogil
        void (*pack_bf16_rows)(fl_idx K, fl_idx M, const uint16_t *wt,
                               uint32_t *rw) noexcept nogil
        void (*gemm_bf16_rows)(fl_idx n, fl_idx K, fl_idx M, const float *x,
                               fl_idx ldx, const uint32_t *rw,
                               const float *b, float *y, fl_idx ldy,
                               int act) noexcept nogil
        void (*widen_bf16)(fl_idx n, const uint16_t *src,
                           float *dst) noexcept nogil
        int nr_bf16
        # the level's tile
        int nr_f32
        int nr_f64
        int mr
        int level
        const char *isa

    fl_kernel_table fl_kt
    int fl_kernels_init(int level) noexcept
    const char *fl_kernels_isa() noexcept
    int fl_kernels_qbest() noexcept
    void fl_kernels_q7(int on) noexcept

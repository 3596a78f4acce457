# The BLAS contract of fastlazy (scikit-learn's pattern: a pure .pxd that
# every compiled module builds against).
#
# The BLAS is OpenBLAS from the ``scipy-openblas32`` wheel -- the build NumPy
# and SciPy themselves compile against.  We compile against its ``cblas.h``
# (every symbol carries the ``scipy_`` prefix) without linking; importing
# ``scipy_openblas32`` first loads the library with RTLD_GLOBAL, which is
# where the extension's symbols resolve.  ``blas_int`` is the one alias for
# BLAS integers, so an ILP64 build later is a one-line change.

cdef extern from "cblas.h" nogil:
    ctypedef int blas_int "blasint"

    enum CBLAS_ORDER:
        CblasRowMajor
        CblasColMajor
    enum CBLAS_TRANSPOSE:
        CblasNoTrans
        CblasTrans

    void cblas_sgemm "scipy_cblas_sgemm"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
        blas_int m, blas_int n, blas_int k, float alpha,
        const float *a, blas_int lda, const float *b, blas_int ldb,
        float beta, float *c, blas_int ldc)
    void cblas_dgemm "scipy_cblas_dgemm"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
        blas_int m, blas_int n, blas_int k, double alpha,
        const double *a, blas_int lda, const double *b, blas_int ldb,
        double beta, double *c, blas_int ldc)
    void cblas_sgemv "scipy_cblas_sgemv"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE ta, blas_int m, blas_int n,
        float alpha, const float *a, blas_int lda, const float *x,
        blas_int incx, float beta, float *y, blas_int incy)
    void cblas_dgemv "scipy_cblas_dgemv"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE ta, blas_int m, blas_int n,
        double alpha, const double *a, blas_int lda, const double *x,
        blas_int incx, double beta, double *y, blas_int incy)

    # out-of-place (transposing) matrix copies, cache-blocked
    void cblas_somatcopy "scipy_cblas_somatcopy"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE trans, blas_int rows,
        blas_int cols, float alpha, const float *a, blas_int lda, float *b,
        blas_int ldb)
    void cblas_domatcopy "scipy_cblas_domatcopy"(
        CBLAS_ORDER order, CBLAS_TRANSPOSE trans, blas_int rows,
        blas_int cols, double alpha, const double *a, blas_int lda,
        double *b, blas_int ldb)

    void openblas_set_num_threads "scipy_openblas_set_num_threads"(int n)
    int openblas_get_num_threads "scipy_openblas_get_num_threads"()
    char *openblas_get_config "scipy_openblas_get_config"()
    char *openblas_get_corename "scipy_openblas_get_corename"()

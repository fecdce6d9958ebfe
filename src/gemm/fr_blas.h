/* Which BLAS library fastrnn's kernels call (see _blas.pxd and fastrnn/_blas.py).
 *
 * By default the kernels call scipy's Fortran BLAS through scipy.linalg.cython_blas (LP64).
 * fr_use_blas, at module import, can point them instead at the BLAS NumPy itself runs (the
 * scipy-openblas64 of NumPy's wheels: ILP64 Fortran routines named scipy_sgemm_64_ etc.), found
 * and chosen by fastrnn._blas.  Each extension module holds its own copy of these pointers, set
 * once at its import, before any kernel runs.
 */
#ifndef FR_BLAS_H
#define FR_BLAS_H

#include <Python.h>
#include <stdint.h>

typedef int64_t fr_blas64_int;

typedef void (*fr_sgemm64_fn)(const char *ta, const char *tb, const fr_blas64_int *m,
                              const fr_blas64_int *n, const fr_blas64_int *k, const float *alpha,
                              const float *a, const fr_blas64_int *lda, const float *b,
                              const fr_blas64_int *ldb, const float *beta, float *c,
                              const fr_blas64_int *ldc);
typedef void (*fr_dgemm64_fn)(const char *ta, const char *tb, const fr_blas64_int *m,
                              const fr_blas64_int *n, const fr_blas64_int *k, const double *alpha,
                              const double *a, const fr_blas64_int *lda, const double *b,
                              const fr_blas64_int *ldb, const double *beta, double *c,
                              const fr_blas64_int *ldc);
typedef void (*fr_sgemv64_fn)(const char *t, const fr_blas64_int *m, const fr_blas64_int *n,
                              const float *alpha, const float *a, const fr_blas64_int *lda,
                              const float *x, const fr_blas64_int *incx, const float *beta,
                              float *y, const fr_blas64_int *incy);
typedef void (*fr_dgemv64_fn)(const char *t, const fr_blas64_int *m, const fr_blas64_int *n,
                              const double *alpha, const double *a, const fr_blas64_int *lda,
                              const double *x, const fr_blas64_int *incx, const double *beta,
                              double *y, const fr_blas64_int *incy);

/* all four set, or all NULL (then the kernels call scipy's cython_blas) */
static fr_sgemm64_fn fr_sgemm64 = NULL;
static fr_dgemm64_fn fr_dgemm64 = NULL;
static fr_sgemv64_fn fr_sgemv64 = NULL;
static fr_dgemv64_fn fr_dgemv64 = NULL;

/* Point this module's kernels at the BLAS fastrnn._blas chose: call once at module import.
 * -1 with a Python exception set if fastrnn._blas cannot be imported or answers nonsense. */
static inline int fr_use_blas(void)
{
    PyObject *m = PyImport_ImportModule("fastrnn._blas");
    if (m == NULL)
        return -1;
    PyObject *r = PyObject_CallMethod(m, "ilp64_addresses", NULL);
    Py_DECREF(m);
    if (r == NULL)
        return -1;
    if (r == Py_None) {                 /* scipy's cython_blas */
        Py_DECREF(r);
        fr_sgemm64 = NULL;
        fr_dgemm64 = NULL;
        fr_sgemv64 = NULL;
        fr_dgemv64 = NULL;
        return 0;
    }
    void *p[4];
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 4) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_RuntimeError,
                        "fastrnn._blas.ilp64_addresses() must return None or 4 addresses");
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        p[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(r, i));
        if (p[i] == NULL) {
            Py_DECREF(r);
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "fastrnn._blas: a NULL BLAS address");
            return -1;
        }
    }
    Py_DECREF(r);
    fr_sgemm64 = (fr_sgemm64_fn)p[0];
    fr_dgemm64 = (fr_dgemm64_fn)p[1];
    fr_sgemv64 = (fr_sgemv64_fn)p[2];
    fr_dgemv64 = (fr_dgemv64_fn)p[3];
    return 0;
}

#endif

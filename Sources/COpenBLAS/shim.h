#ifndef JOBFARM_COPENBLAS_SHIM_H
#define JOBFARM_COPENBLAS_SHIM_H

// Debian's libopenblas-dev installs cblas.h under
// /usr/include/x86_64-linux-gnu/openblas-pthread/; the include path comes
// from pkg-config `openblas` (see Package.swift).
#include <cblas.h>

// openblas_set_num_threads, openblas_get_num_threads, openblas_get_config and
// openblas_get_corename are declared by OpenBLAS's cblas.h; they are repeated
// here (identical prototypes) so this shim documents everything Compute uses.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
char *openblas_get_corename(void);

// LAPACK symmetric eigensolvers (Fortran ABI, all arguments by pointer).
// They are exported by libopenblas itself, so no separate -llapack is needed.
void ssyevd_(const char *jobz, const char *uplo, const int *n, float *a,
             const int *lda, float *w, float *work, const int *lwork,
             int *iwork, const int *liwork, int *info);
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a,
             const int *lda, double *w, double *work, const int *lwork,
             int *iwork, const int *liwork, int *info);
void ssyev_(const char *jobz, const char *uplo, const int *n, float *a,
            const int *lda, float *w, float *work, const int *lwork, int *info);

#endif

/* Instantiates fr_gemm_impl.h (packed recurrent product) for float32 (_f) and float64 (_d). */
#ifndef FR_GEMM_H
#define FR_GEMM_H

#include <stddef.h>
#include "fr_math.h"

#define FR_T float
#define FR_FN(name) name##_f
#include "fr_gemm_impl.h"
#undef FR_T
#undef FR_FN

#define FR_T double
#define FR_FN(name) name##_d
#include "fr_gemm_impl.h"
#undef FR_T
#undef FR_FN

#endif

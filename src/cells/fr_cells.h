/* Instantiates fr_cells_impl.h for float32 (suffix _f) and float64 (suffix _d). */
#ifndef FR_CELLS_H
#define FR_CELLS_H

#include <Python.h>
#include "fr_math.h"

#define FR_T float
#define FR_FN(name) name##_f
#define FR_SIG fr_sigmoidf
#define FR_TANH fr_tanhf
#include "fr_cells_impl.h"
#undef FR_T
#undef FR_FN
#undef FR_SIG
#undef FR_TANH

#define FR_T double
#define FR_FN(name) name##_d
#define FR_SIG fr_sigmoidd
#define FR_TANH fr_tanhd
#include "fr_cells_impl.h"
#undef FR_T
#undef FR_FN
#undef FR_SIG
#undef FR_TANH

#endif

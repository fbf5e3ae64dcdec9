"""ONNX -> onnx2tf -> calibrated full-int8 TFLite, verified against the float model (`kws-convert`)."""

import os

# One BLAS/OpenMP thread unless the caller chose otherwise: on this busy 2-core CPU the MFCC front end takes
# 22 ms per 1.5 s window with two threads and 2.7 ms with one. It must be set before numpy is first imported,
# which is why it lives here, ahead of every conversion module.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

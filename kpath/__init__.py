import os

__version__ = "0.1.0"

# numpy's OpenBLAS starts a thread per core as numpy is imported (about
# 30 ms of CPU time at every start, a fifth of `replay --stats`' start-up);
# kpath does no linear algebra. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

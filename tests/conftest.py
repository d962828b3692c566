import os

# Tests run single-threaded per process so they behave the same on CI's 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

"""ztid benchmarks: each bench_<area>.py prints figures and ratios against a reference measured in the same run."""

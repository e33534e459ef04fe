"""Speed and memory of the variants against fairseq's stock transformer
(:mod:`fairseq_rskip.benchmark.throughput`; ``benchmarks/benchmark_throughput.py``
runs it from a checkout)."""

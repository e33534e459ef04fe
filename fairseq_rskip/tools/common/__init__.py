"""The base every tool stands on, importing no tool: child processes, fairseq-train's
logs, figures, output files, activation memory, models and batches built in-process
as fairseq-train builds them, synthetic data, sacreBLEU's paired tests and
t-intervals of paired differences.
"""

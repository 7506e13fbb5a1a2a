"""Throughput benchmark of the distillation step: kd_plugin's trainer against the original DistilBERT loop.

See ``benchmarks/README.md``. Run ``python benchmarks/distill_throughput.py --help``.
"""

"""Benchmarks: restoration quality on datasets and throughput on synthetic images.

- :mod:`deblurcli.bench.datasets` — folder pairs, the ``levin`` and ``synthetic`` presets.
- :mod:`deblurcli.bench.methods` — the explicit registry of benchmarkable methods.
- :mod:`deblurcli.bench.quality` — run methods on a dataset and score them.
- :mod:`deblurcli.bench.speed` — latency, megapixels per second and peak memory.
- :mod:`deblurcli.bench.report` — tables, JSON documents and CSV files.
- :mod:`deblurcli.bench.plot` — matplotlib figures (imported lazily).
"""

from __future__ import annotations

"""The benchmark harness: models, photos, load generation, process measurement, reports.

Runs inside the harness virtual environment (``benchmarks/.venvs/corolla``), which has Corolla
installed editable plus psutil, matplotlib and py-spy; ``benchmarks/run.py`` creates it.
"""

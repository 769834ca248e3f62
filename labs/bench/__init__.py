"""The benchmark behind ``labs/compare.py``: brokers as processes, a multi-process load generator.

``targets`` starts, stops and measures brokers; ``wire`` pre-encodes and verifies benchmark
packets; ``publisher``/``subscriber``/``holder`` are the generator processes; ``scenarios``
drives them; ``report`` and ``plots`` turn the figures into tables, JSON and PNGs.
"""

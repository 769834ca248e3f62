"""The benchmark behind ``labs/compare.py``: brokers as processes, a multi-process load generator.

``targets``, ``references``, ``aedes`` and ``persistence`` start and stop brokers; ``proctree``
measures them from /proc; ``wire`` pre-encodes and verifies benchmark packets;
``publisher``/``subscriber``/``holder`` are the generator processes; ``throughput`` and
``connections`` drive them; ``plan`` and ``suite`` decide what runs in which order;
``summary``, ``validity``, ``tables``, ``overview``, ``report`` and ``plots`` turn the figures
into tables, JSON and PNGs. How to read the results: labs/COMPARE.md.
"""

"""Streaming anomaly detectors: pure numpy, independent of the collector.

A detector scores readings; a separate stage decides which scores become alerts.
This package never imports ``collector``.
"""

"""Field tools: the simulated devices, ``smartunit demo``, the local Mosquitto and InfluxDB
servers of the demo, the tests and the benchmarks, and the broker's principals (ACL and
password files).

They drive the service from outside, as a device fleet or an operator would, so they
depend on ``collector`` and ``collector`` never imports them: the collector's process
loads none of this package (tests/test_packaging.py checks it), and the ``smartunit``
command loads a tool only when it runs (collector/cli.py).
"""

"""Streaming anomaly detectors: pure numpy, independent of the collector.

A detector *scores* readings (``detectors.base``); a separate stage *decides* which
scores become alerts (``detectors.decide``). Detectors are found by configuration name in
``detectors.registry.DETECTORS``; importing this package registers all of them. This
package never imports ``collector``.
"""

# Importing each detector module registers its detectors.
from detectors import auto as _auto  # noqa: F401
from detectors import cusum as _cusum  # noqa: F401
from detectors import novelty as _novelty  # noqa: F401
from detectors import robust as _robust  # noqa: F401
from detectors import seasonal as _seasonal  # noqa: F401
from detectors import shift as _shift  # noqa: F401
from detectors.rules import capacity as _capacity  # noqa: F401
from detectors.rules import flatline as _flatline  # noqa: F401
from detectors.rules import out_of_range as _out_of_range  # noqa: F401
from detectors.rules import rate as _rate  # noqa: F401
from detectors.rules import threshold as _threshold  # noqa: F401

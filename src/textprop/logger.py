"""TextGrad's `logger`: the `textprop` logger of the standard logging module.

TextGrad's writes a JSON-lines file under ./logs/ at import; this one has no handler until
the application adds one (`logging.basicConfig()`), so importing textprop writes nothing.
"""

import logging

logger = logging.getLogger("textprop")

__all__ = ["logger"]

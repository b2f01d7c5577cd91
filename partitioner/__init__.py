"""loihi-partitioner: pack nengo-loihi blocks onto Loihi cores and chips.

The public API is filled in as modules land; see ``docs/``.
"""

__version__ = "0.1.0"

"""Example networks for the partitioner; each module exposes ``build()``."""

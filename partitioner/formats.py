"""Synapse formats of blocks that share a core.

``build_synapse`` writes each synapse entry's compartment index as the index on the
core (block offset included), but nengo-loihi chose the format's index width
(``SynapseConfig.idx_bits``) for the block alone, at offset 0. A block placed after
another on a core therefore needs a wider format. We give every such block the width
that addresses the whole core (`CoreLimits.shared_index_bits`), so the cost is known
before packing and does not depend on the exact offset.

Formats are changed on copies, and the original format of every synapse is kept, so
allocating the same model twice measures the same thing.
"""

from __future__ import annotations

import copy
import weakref

from nengo_loihi.block import SynapseConfig

__all__ = [
    "index_bits_code",
    "format_key",
    "widened_format",
    "original_format",
    "set_format",
    "restore_formats",
]

_ORIGINAL = weakref.WeakKeyDictionary()


def index_bits_code(real_bits):
    """The ``idx_bits`` code of the narrowest format with at least ``real_bits`` bits."""
    for code, bits in enumerate(SynapseConfig.INDEX_BITS_MAP):
        if bits >= real_bits:
            return code
    raise ValueError(f"No synapse format has {real_bits} index bits")


def format_key(cfg):
    """A hashable key of a `SynapseConfig` (what the core's format table dedupes on)."""
    return tuple(getattr(cfg, name) for name in SynapseConfig.params)


def original_format(synapse):
    """The synapse's format as nengo-loihi built it (before any widening)."""
    return _ORIGINAL.get(synapse, synapse.synapse_cfg)


def widened_format(cfg, real_bits):
    """A copy of ``cfg`` whose index field has at least ``real_bits`` bits."""
    code = index_bits_code(real_bits)
    if cfg.idx_bits >= code:
        return cfg
    wide = copy.copy(cfg)
    wide.idx_bits = code
    return wide


def set_format(synapse, cfg):
    """Give ``synapse`` the format ``cfg``, remembering its original format."""
    _ORIGINAL.setdefault(synapse, synapse.synapse_cfg)
    synapse.synapse_cfg = cfg


def restore_formats(blocks):
    """Put back the original format of every synapse of ``blocks``."""
    for block in blocks:
        for synapse in block.synapses:
            original = _ORIGINAL.pop(synapse, None)
            if original is not None:
                synapse.synapse_cfg = original

"""Typed exceptions. Each message names what is wrong, the limit, and how to fix it.

They subclass nengo's exception classes (and through them the matching builtins),
so ``except nengo.exceptions.BuildError`` and ``except ValueError`` keep working.
"""

from nengo.exceptions import BuildError, NengoException

__all__ = [
    "PartitionerError",
    "UnknownBoardError",
    "ExtractionError",
    "BlockTooLargeError",
    "CoreRuleError",
    "InfeasibleError",
    "PlanError",
    "ScenarioError",
]


class PartitionerError(NengoException):
    """Base class of every error raised by this package."""


class UnknownBoardError(PartitionerError, ValueError):
    """A board name or board shape that does not exist."""


class ExtractionError(PartitionerError, BuildError):
    """The model or the traffic information given to `partitioner.extract` is unusable."""


class BlockTooLargeError(PartitionerError, BuildError):
    """One block alone breaks a per-core rule, so no allocator can place it.

    Attributes
    ----------
    block : str
        The block's label.
    source : str
        The nengo object the block came from.
    rule : str
        The per-core rule broken (e.g. ``"compartments"``).
    value : int
        The block's need.
    limit : int
        The core's capacity.
    suggestion : object or None
        A ``nengo_loihi.BlockShape`` that fits, where one can be computed.
    """

    def __init__(self, message, block=None, source=None, rule=None, value=None,
                 limit=None, suggestion=None):
        super().__init__(message)
        self.block = block
        self.source = source
        self.rule = rule
        self.value = value
        self.limit = limit
        self.suggestion = suggestion


class CoreRuleError(PartitionerError, BuildError):
    """Blocks placed together on one core break a per-core rule (e.g. in a replayed plan)."""


class InfeasibleError(PartitionerError, BuildError):
    """The model does not fit the chips or board asked for."""


class PlanError(PartitionerError, ValueError):
    """A saved plan is corrupt or belongs to another model."""


class ScenarioError(PartitionerError, ValueError):
    """A scenario file cannot be loaded or does not expose ``build()``."""

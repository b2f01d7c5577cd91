"""Partitioning strategies: each maps a TrafficGraph to a Plan."""

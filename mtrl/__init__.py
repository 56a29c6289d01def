"""mtrl: multi-task reinforcement learning with gradient surgery on Meta-World."""

__version__ = "0.4.0.dev0"

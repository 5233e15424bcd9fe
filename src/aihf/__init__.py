"""aihf: reward and policy learned jointly from demonstrations and preferences (arXiv 2406.06874)."""

__version__ = "0.1.0"

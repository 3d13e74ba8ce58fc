"""mesh-llm: five services (mesh, gossip, placement, runner, gateway) that make one node."""

__version__ = "0.1.0"

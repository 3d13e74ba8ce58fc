"""The placement service: decides this node's role per model (solo, split host/worker, standby)."""

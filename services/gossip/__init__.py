"""The gossip service: the mesh's shared state, one versioned record per node."""

"""What every service of a node shares: its config, home dir layout, logging, gRPC plumbing."""

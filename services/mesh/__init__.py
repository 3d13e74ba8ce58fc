"""The mesh service: node identity, admission, QUIC peering and tunnels."""

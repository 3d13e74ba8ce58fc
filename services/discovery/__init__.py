"""Discovery: public meshes on Nostr relays and LAN meshes by mDNS (`--publish`, `--auto`, `discover`)."""

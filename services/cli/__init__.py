"""The two command lines: `mesh-llm` (start or join a node) and `meshctl` (administer a running node)."""

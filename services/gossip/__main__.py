"""`python -m services.gossip --home DIR`"""

from services.gossip.app import run_gossip
from services.node.service_main import service_main

service_main("gossip", run_gossip)

"""`python -m services.discovery --home DIR`"""

from services.discovery.app import run_discovery
from services.node.service_main import service_main

service_main("discovery", run_discovery)

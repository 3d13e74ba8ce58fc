"""`python -m services.placement --home DIR`"""

from services.node.service_main import service_main
from services.placement.app import run_placement

service_main("placement", run_placement)

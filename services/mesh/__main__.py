"""`python -m services.mesh --home DIR`"""

from services.node.service_main import service_main
from services.mesh.app import run_mesh

service_main("mesh", run_mesh)

"""`python -m services.mesh --home DIR`"""

from services.mesh.app import run_mesh
from services.node.service_main import service_main

service_main("mesh", run_mesh, fast_loop=True)

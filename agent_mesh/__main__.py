import os

from agent_mesh.broker_main import ENV

if ENV in os.environ:  # the broker's own image (agent_mesh/broker_main.py): nothing else imported
    from agent_mesh.broker_main import main
else:
    from agent_mesh.cli import main

main()

"""Online serving of an export on Ray Serve (``launchers/serve.py``): the request contract
(requests.py, plain Python), the deployment (app.py) and the command (entry.py)."""

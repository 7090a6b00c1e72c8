"""Serve an export over HTTP JSON, from this process or on Ray Serve (serve.backend=ray):

    python launchers/serve.py init_from=<run>/best serve.port=8000
    python launchers/serve.py init_from=<run>/best serve.backend=ray serve.replicas=2 [ray.address=auto]

POST /recommend {"users": [...], "k": 20} or {"histories": [[...]], "k": 20}; POST /similar
{"items": [...], "k": 20}; GET /healthz. Binds 127.0.0.1 unless serve.host says otherwise.
"""

from cllm4rec_dist.cli.app import CONFIGS, run_app

if __name__ == "__main__":
    run_app(
        CONFIGS,
        "serve",
        task="cllm4rec_dist.serve.entry:run_serve",
        schema="cllm4rec_dist.serve.config:register_serve",
        loading="torch and the model",
    )

"""Container command for the stand-in pod tests: speaks Dagster Pipes the way ``python -m aiflow.train`` does.

Reads the TrainRequest from the Pipes extras and behaves as ``SCRIPT_MODE`` says:
``ok`` reports a materialization; ``raise`` fails with a traceback (a code error);
``preempt-once`` writes a checkpoint marker keyed by the request's checkpoint key, prints
"checkpoint saved" and waits to be killed, and on the next attempt finds the marker and reports
``resumed``; ``preempt-always`` / ``oom`` save and wait to be killed every time.
"""

import json
import os
import time
from pathlib import Path

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    request = pipes.get_extra("aiflow_train_request")
    mode = os.environ.get("SCRIPT_MODE", "ok")
    marker = Path(request["artifact_root"]) / "checkpoints" / f"{request['checkpoint_key']}.json"
    resumed = marker.exists()
    pipes.log.info(f"training {request['model_name']} mode={mode} resumed={resumed}")
    print(f"plain stdout line from the training process (pid {os.getpid()})", flush=True)
    if mode == "raise":
        raise RuntimeError("loss became NaN at epoch 3 (deliberate test failure)")
    if mode in ("preempt-always", "oom") or (mode == "preempt-once" and not resumed):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"epoch": 2}))
        print("checkpoint saved", flush=True)
        time.sleep(60)  # the stand-in takes the pod away here
        raise SystemExit("the stand-in should have killed this pod")
    pipes.report_asset_materialization(
        metadata={
            "resumed": resumed,
            "checkpoint_key": request["checkpoint_key"],
            "model_name": request["model_name"],
            "data_version": request["data_version"],
            "aws_secret_from_envfrom": os.environ.get("AWS_ACCESS_KEY_ID") == "AKIA-STAND-IN",
            "plain_env": os.environ.get("AIFLOW_PROFILE", ""),
            "pipes_context_env": "DAGSTER_PIPES_CONTEXT" in os.environ,
        },
        data_version=f"v{request['data_version']}",
    )

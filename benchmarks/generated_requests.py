"""Schemathesis against a real ``aiflow serve`` (the tests' tiny models, both datasets) from the OpenAPI document it
publishes: ``python -m benchmarks.generated_requests [--cases 5000] [--seed 0]``. Prints the statuses, the operations
reached and any 5xx; exits 1 on a 5xx, on a server no longer ready or on an inference log that stopped flushing.
(Not a speed figure: the cases are attacks, their count and outcomes are the result.)"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tests.aiflow.serving.conftest import make_home, start_server, tiny_spec
from tests.aiflow.serving.openapi_cases import send_generated, still_serving


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0, help="0: derandomized (the same cases every run); other: random")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = make_home(Path(tmp), [tiny_spec(), tiny_spec("fares", "regression", "Asia/Tokyo")])
        server = start_server(home)
        try:
            outcome = send_generated(server, args.cases, seed=args.seed)
            failure = None
            try:
                still_serving(server, home)
            except AssertionError as exc:
                failure = str(exc)
        finally:
            server.stop()
    print(json.dumps({"cases": outcome.total, "seconds": round(outcome.seconds, 1), "statuses": dict(sorted(outcome.statuses.items())),
                      "operations": dict(outcome.operations.most_common()), "server_errors": len(outcome.server_errors),
                      "after": failure or "ready, no 5xx counted, inference log flushing"}, indent=1))  # fmt: skip
    for line in outcome.server_errors[:20]:
        print(line, file=sys.stderr)
    return 1 if outcome.server_errors or failure else 0


if __name__ == "__main__":
    sys.exit(main())

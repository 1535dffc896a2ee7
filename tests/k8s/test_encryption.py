"""BOUNDARY test (no AWS, no cluster here): the bucket's encryption, policy and lifecycle files are valid S3 requests (botocore's
own model), the policy denies plain HTTP and unencrypted uploads and admits what aiflow sends; PostgreSQL is verify-full
with the CA mounted in every pod that connects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

from aiflow.storage import settings as cfg
from aiflow.storage.artifacts import boto3_sse_args
from tests.k8s.test_least_privilege import run_pod_spec
from tests.k8s.test_pod_security import chart_pod, code_location_pod

pytestmark = pytest.mark.k8s_boundary

ROOT = Path(__file__).resolve().parents[2]
AWS, K8S = ROOT / "deploy" / "aws", ROOT / "deploy" / "k8s"
#: The request body each `aws s3api` command of deploy/aws/README.md reads from its file://, by operation and parameter.
COMMANDS = {
    "put-bucket-encryption": ("PutBucketEncryption", "ServerSideEncryptionConfiguration", "--server-side-encryption-configuration"),
    "put-bucket-policy": ("PutBucketPolicy", "Policy", "--policy"),
    "put-bucket-lifecycle-configuration": ("PutBucketLifecycleConfiguration", "LifecycleConfiguration", "--lifecycle-configuration"),
}


def readme() -> str:
    return (AWS / "README.md").read_text()


def policy() -> dict:
    return json.loads((AWS / "bucket-policy.json").read_text())


def test_each_bucket_command_sends_a_valid_request_body():
    model = botocore.session.get_session().get_service_model("s3")
    for command, (operation, parameter, flag) in COMMANDS.items():
        (path,) = re.findall(rf"aws s3api {command} --bucket aiflow-lake .*?{flag} file://(\S+)", readme())
        text = (ROOT / path).read_text()
        body = text if parameter == "Policy" else json.loads(text)
        report = ParamValidator().validate({"Bucket": "aiflow-lake", parameter: body}, model.operation_model(operation).input_shape)
        assert not report.has_errors(), (command, report.generate_report())
    assert "put-bucket-versioning --bucket aiflow-lake --versioning-configuration Status=Enabled" in readme()


def denied(statements: list[dict], action: str, resource: str, *, tls: bool = True, sse: str | None = None) -> bool:
    """Whether a Deny statement of the bucket policy matches (only the condition operators the policy uses are modelled)."""
    context = {"aws:SecureTransport": "true" if tls else "false", "s3:x-amz-server-side-encryption": sse}
    for statement in statements:
        assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if not any(a == action or (a.endswith("*") and action.startswith(a[:-1])) for a in actions):
            continue
        if not any(r == resource or (r.endswith("*") and resource.startswith(r[:-1])) for r in resources):
            continue
        matches = []
        for operator, tests in statement["Condition"].items():
            for key, wanted in tests.items():
                value, wanted = context[key], wanted if isinstance(wanted, list) else [wanted]
                if operator == "Bool":
                    matches.append(value in wanted)
                elif operator == "Null":
                    matches.append((value is None) == (wanted == ["true"]))
                elif operator == "StringNotEqualsIfExists":
                    matches.append(value is None or value not in wanted)
                else:
                    raise ValueError(f"condition operator {operator} not modelled")
        if all(matches):
            return True
    return False


OBJECT = "arn:aws:s3:::aiflow-lake/lake/registry/model_versions/part-0.parquet"


def test_the_bucket_policy_denies_plain_http_and_unencrypted_uploads():
    statements = policy()["Statement"]
    assert denied(statements, "s3:GetObject", OBJECT, tls=False) and denied(statements, "s3:ListBucket", "arn:aws:s3:::aiflow-lake", tls=False)
    assert denied(statements, "s3:PutObject", OBJECT, tls=False, sse="AES256")
    assert denied(statements, "s3:PutObject", OBJECT, sse=None)
    assert denied(statements, "s3:PutObject", OBJECT, sse="aws:fsx")
    assert not denied(statements, "s3:GetObject", OBJECT)


@pytest.mark.parametrize("setting", [None, "AES256", "aws:kms"], ids=["unset", "sse-s3", "values"])
def test_what_aiflow_sends_passes_the_bucket_policy(setting):
    env = {cfg.PROFILE: "s3", cfg.LAKE_URI: "s3://aiflow-lake/lake", cfg.LANDING_URI: "s3://aiflow-lake",
           cfg.ARTIFACT_URI: "s3://aiflow-lake/artifacts", cfg.ACCESS_KEY_ID: "k", cfg.SECRET_ACCESS_KEY: "s"}  # fmt: skip
    if setting:
        env[cfg.SSE] = setting
    header = boto3_sse_args(cfg.Settings.from_env(env).storage_options()).get("ServerSideEncryption")
    assert header and not denied(policy()["Statement"], "s3:PutObject", OBJECT, sse=header)
    env[cfg.SSE] = "none"  # the opt-out: the policy refuses it on AWS (keep it for stores without SSE)
    header = boto3_sse_args(cfg.Settings.from_env(env).storage_options()).get("ServerSideEncryption")
    assert denied(policy()["Statement"], "s3:PutObject", OBJECT, sse=header)


def test_the_default_encryption_key_is_the_one_the_iam_policies_grant():
    (rule,) = json.loads((AWS / "bucket-encryption.json").read_text())["Rules"]
    key = rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"]
    for name in ("iam-policy.json", "iam-policy-training.json", "iam-policy-serving.json"):
        kms = [s for s in json.loads((AWS / name).read_text())["Statement"] if str(s["Resource"]).startswith("arn:aws:kms:")]
        assert [s["Resource"] for s in kms] == [key], name


def test_postgres_is_verify_full_with_the_ca_secret_mounted_in_every_pod_that_connects():
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    params = values["postgresql"]["postgresqlParams"]
    assert params["sslmode"] == "verify-full"
    pods = {
        "webserver": chart_pod(values["dagsterWebserver"], "dagster"),
        "daemon": chart_pod(values["dagsterDaemon"], "dagster"),
        "code location": code_location_pod(values),
        "run pod": run_pod_spec(values),
    }
    for name, spec in pods.items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = [m for m in spec["containers"][0]["volumeMounts"] if params["sslrootcert"].startswith(m["mountPath"].rstrip("/") + "/")]
        assert mounts, f"{name}: nothing mounted at {params['sslrootcert']}"
        secret = volumes[mounts[0]["name"]]["secret"]
        assert secret["secretName"] == "aiflow-postgres-ca" and params["sslrootcert"].endswith("/" + secret["items"][0]["path"]), name
    assert "create secret generic aiflow-postgres-ca" in (ROOT / "deploy" / "README.md").read_text()
    assert values["migrate"]["enabled"] is False  # the chart's migrate Job mounts no CA: it would fail verify-full

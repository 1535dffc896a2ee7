"""Environment profiles: the one place that picks resource implementations (local, s3, k8s).

``AIFLOW_PROFILE`` names the profile when the code location loads; no asset ever branches on it.
Secrets are never read here: S3 credentials are ``EnvVar`` references resolved at run time.
"""


import os

from dagster import EnvVar
from dagster_aws.s3 import S3Resource

from resources.storage import (
    ArtifactsResource,
    LocalLakeResource,
    LocalLandingResource,
    S3LakeResource,
    S3LandingResource,
)
from resources.training import SubprocessTrainingLauncher

PROFILES = ("local", "s3", "k8s")


def local_resources(home: str = ".aiflow") -> dict:
    """Everything on this machine: Delta tables, landing zones and artifacts under ``home``; local training."""
    return {
        "lake": LocalLakeResource(root=os.path.join(home, "lake")),
        "landing": LocalLandingResource(root=home),
        "artifacts": ArtifactsResource(root=os.path.join(home, "artifacts")),
        "trainer": SubprocessTrainingLauncher(),
    }


def s3_resources() -> dict:
    """Delta tables and landing zones on S3 (or an S3-compatible store).

    Environment at run time: ``AIFLOW_LAKE_URI``, ``AIFLOW_LANDING_URI``, ``AIFLOW_ARTIFACT_URI``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; optional ``AWS_ENDPOINT_URL`` and ``AWS_ALLOW_HTTP``
    for S3-compatible servers (set by :func:`s3_endpoint_resources`).
    """
    s3 = S3Resource(
        aws_access_key_id=EnvVar("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=EnvVar("AWS_SECRET_ACCESS_KEY"),
        region_name=EnvVar("AWS_REGION"),
        endpoint_url=EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None,
    )
    return {
        "s3": s3,
        "lake": S3LakeResource(
            root_uri=EnvVar("AIFLOW_LAKE_URI"),
            access_key_id=EnvVar("AWS_ACCESS_KEY_ID"),
            secret_access_key=EnvVar("AWS_SECRET_ACCESS_KEY"),
            region=EnvVar("AWS_REGION"),
            endpoint_url=EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None,
            allow_http=os.environ.get("AWS_ALLOW_HTTP", "false").lower() == "true",
        ),
        "landing": S3LandingResource(s3=s3, root_uri=EnvVar("AIFLOW_LANDING_URI")),
        "artifacts": ArtifactsResource(root=EnvVar("AIFLOW_ARTIFACT_URI")),
        "trainer": SubprocessTrainingLauncher(),
    }


def k8s_resources() -> dict:
    """The s3 profile, with training in a GPU pod per run (``resources/k8s_training.py``).

    Environment at run time, besides the s3 profile's: ``AIFLOW_TRAINING_IMAGE`` (the training
    image), ``AIFLOW_TRAINING_NAMESPACE``, ``AIFLOW_TRAINING_SECRET`` (the Kubernetes secret whose
    keys become the pod's environment: the ``AWS_*`` credentials and ``AIFLOW_*`` URIs).
    """
    from resources.k8s_training import K8sTrainingLauncher

    return {
        **s3_resources(),
        "trainer": K8sTrainingLauncher(
            image=EnvVar("AIFLOW_TRAINING_IMAGE"),
            namespace=os.environ.get("AIFLOW_TRAINING_NAMESPACE", "aiflow"),
            env_from_secrets=[os.environ.get("AIFLOW_TRAINING_SECRET", "aiflow-storage")],
            load_incluster_config=True,
        ),
    }


def resources_for(profile: str | None = None) -> dict:
    """Resources of the named profile (default: ``AIFLOW_PROFILE`` or ``local``)."""
    profile = profile or os.environ.get("AIFLOW_PROFILE", "local")
    if profile == "local":
        return local_resources(os.environ.get("AIFLOW_HOME", ".aiflow"))
    if profile == "s3":
        return s3_resources()
    if profile == "k8s":
        return k8s_resources()
    raise ValueError(f"unknown AIFLOW_PROFILE {profile!r}; choose one of {', '.join(PROFILES)}")

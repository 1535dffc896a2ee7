"""Environment profiles: the one place that picks resource implementations (local, s3, k8s).

``AIFLOW_PROFILE`` names the profile when the code location loads; no asset branches on it.
Variable names, defaults and the local layout come from ``aiflow.storage.settings``, the same
module the CLI builds its stores from. Secrets are never read here: S3 credentials (and the s3
URIs) are ``EnvVar`` references resolved at run time.
"""


import os

from dagster import EnvVar, FilesystemIOManager
from dagster_aws.s3 import S3Resource

from aiflow.serving.reports import KEY_ENV as REPORT_KEY_ENV
from aiflow.serving.reports import URL_ENV as REPORTS_URL_ENV
from aiflow.storage import settings as cfg
from resources.notify import NotifierResource
from resources.reports import ReportLinksResource
from resources.storage import (
    ArtifactsResource,
    LocalLakeResource,
    LocalLandingResource,
    S3LakeResource,
    S3LandingResource,
)
from resources.training import SubprocessTrainingLauncher

PROFILES = cfg.PROFILES


#: Environment variable holding the webhook URL (a secret: Dagster resolves it at run time, it is never logged).
WEBHOOK_URL = "AIFLOW_WEBHOOK_URL"


def report_links_resource() -> ReportLinksResource:
    """Signed links to the reports when ``AIFLOW_REPORTS_URL`` and ``AIFLOW_REPORT_KEY`` are set (the key as an ``EnvVar``)."""
    if os.environ.get(REPORTS_URL_ENV) and os.environ.get(REPORT_KEY_ENV):
        return ReportLinksResource(base_url=os.environ[REPORTS_URL_ENV], key=EnvVar(REPORT_KEY_ENV))
    return ReportLinksResource()


def notifier_resource() -> NotifierResource:
    """The webhook from ``AIFLOW_WEBHOOK_URL`` when it is set (resolved by Dagster as an ``EnvVar``); off otherwise."""
    return NotifierResource(url=EnvVar(WEBHOOK_URL)) if os.environ.get(WEBHOOK_URL) else NotifierResource()


def local_resources(home: str = cfg.DEFAULT_HOME) -> dict:
    """Everything on this machine: Delta tables, landing zones and artifacts under ``home``; local training."""
    lake, landing, artifacts = cfg.local_layout(home)  # refuses an s3:// home (it would be a folder named "s3:")
    return {
        "lake": LocalLakeResource(root=lake),
        "landing": LocalLandingResource(root=landing),
        "artifacts": ArtifactsResource(root=artifacts),
        "trainer": SubprocessTrainingLauncher(),
        "notifier": notifier_resource(),
        "reports": report_links_resource(),
        # Dagster's default, declared so its config is typed: the implicit one breaks `dagster job scaffold_config`
        "io_manager": FilesystemIOManager(),
    }


def s3_access() -> dict:
    """S3 credential fields as ``EnvVar`` (resolved at run time); non-secret options as the settings read them.

    ``AWS_REGION`` is optional (default ``us-east-1``); ``AWS_ENDPOINT_URL`` and ``AWS_ALLOW_HTTP`` only
    for S3-compatible servers; ``AIFLOW_S3_SSE`` (``AES256``, the default when unset; ``aws:kms``; ``none``) and
    ``AIFLOW_S3_SSE_KMS_KEY_ID`` encrypt every write. Which of those are set is decided when the code location loads (a wrong SSE
    setting fails the load, naming the variable).
    """
    encryption = cfg.s3_storage_options(
        access_key_id=None, secret_access_key=None, region=None, endpoint_url=None, allow_http=False,
        sse=os.environ.get(cfg.SSE), sse_kms_key_id=os.environ.get(cfg.SSE_KMS_KEY_ID),
    )  # fmt: skip
    return {
        "access_key_id": EnvVar(cfg.ACCESS_KEY_ID),
        "secret_access_key": EnvVar(cfg.SECRET_ACCESS_KEY),
        "region": EnvVar(cfg.REGION) if os.environ.get(cfg.REGION) else cfg.DEFAULT_REGION,
        "endpoint_url": EnvVar(cfg.ENDPOINT_URL) if os.environ.get(cfg.ENDPOINT_URL) else None,
        "allow_http": cfg.allow_http(os.environ.get(cfg.ALLOW_HTTP)),
        "sse": encryption.get(cfg.SSE_OPTION) or cfg.SSE_OFF,  # resolved: None would mean the default again
        "sse_kms_key_id": encryption.get(cfg.SSE_KMS_KEY_OPTION),
    }


def s3_resources() -> dict:
    """Delta tables, landing zones and artifacts on S3 (or an S3-compatible store); local training.

    Environment at run time: ``AIFLOW_LAKE_URI``, ``AIFLOW_LANDING_URI`` (a spec's relative landing
    URI resolves under it: the demo's flights land in ``<AIFLOW_LANDING_URI>/landing/flights/``),
    ``AIFLOW_ARTIFACT_URI``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (see :func:`s3_access`).
    """
    access = s3_access()
    s3 = S3Resource(
        aws_access_key_id=access["access_key_id"],
        aws_secret_access_key=access["secret_access_key"],
        region_name=access["region"],
        endpoint_url=access["endpoint_url"],
    )
    return {
        "s3": s3,
        "lake": S3LakeResource(root_uri=EnvVar(cfg.LAKE_URI), **access),
        "landing": S3LandingResource(
            s3=s3, root_uri=EnvVar(cfg.LANDING_URI), sse=access["sse"], sse_kms_key_id=access["sse_kms_key_id"]
        ),
        "artifacts": ArtifactsResource(root=EnvVar(cfg.ARTIFACT_URI), **access),
        "trainer": SubprocessTrainingLauncher(),
        "notifier": notifier_resource(),
        "reports": report_links_resource(),
        "io_manager": FilesystemIOManager(),  # as in local_resources
    }


#: The Secret of S3 credentials deploy/README.md creates (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
TRAINING_SECRET = "aiflow-aws"
TRAINING_SECRET_ENV = "AIFLOW_TRAINING_SECRET"


def training_secrets() -> list[str]:
    """The Secrets whose keys become a training pod's environment: ``AIFLOW_TRAINING_SECRET`` (unset: ``aiflow-aws``; empty: none)."""
    name = os.environ.get(TRAINING_SECRET_ENV, TRAINING_SECRET).strip()
    return [name] if name else []


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


def k8s_resources() -> dict:
    """The s3 profile, with training in a GPU pod per run (``resources/k8s_training.py``).

    Environment at run time, besides the s3 profile's: ``AIFLOW_TRAINING_IMAGE`` (the training
    image), ``AIFLOW_TRAINING_NAMESPACE``, ``AIFLOW_TRAINING_SECRET`` (the Kubernetes Secret whose
    keys become the pod's environment, default :data:`TRAINING_SECRET` - the S3 key Secret the deploy
    guide creates; set it empty when the pods get cloud identity instead of a key). The S3
    encryption settings (``AIFLOW_S3_SSE``, ``AIFLOW_S3_SSE_KMS_KEY_ID``; not secrets) are passed on to the
    training pods, so bundles and checkpoints are encrypted as the rest of the lake.
    ``AIFLOW_TRAINING_GPUS`` (default 1) is the GPUs of a training pod: more than one runs the
    entrypoint under torchrun, one DistributedDataParallel process per GPU.
    """
    from resources.k8s_training import K8sTrainingLauncher

    return {
        **s3_resources(),
        "trainer": K8sTrainingLauncher(
            image=EnvVar("AIFLOW_TRAINING_IMAGE"),
            namespace=os.environ.get("AIFLOW_TRAINING_NAMESPACE", "aiflow"),
            env_from_secrets=training_secrets(),
            env={name: os.environ[name] for name in (cfg.SSE, cfg.SSE_KMS_KEY_ID) if os.environ.get(name)},
            gpus=_int_env("AIFLOW_TRAINING_GPUS", 1),
            load_incluster_config=True,
        ),
    }


def resources_for(profile: str | None = None) -> dict:
    """Resources of the named profile (default: ``AIFLOW_PROFILE`` or ``local``; the local home is ``AIFLOW_HOME``)."""
    profile = cfg.check_profile(profile) if profile else cfg.profile_from()
    if profile == "local":
        return local_resources(cfg.home_from())
    if profile == "s3":
        return s3_resources()
    return k8s_resources()

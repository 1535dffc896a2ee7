"""The hardening every pod aiflow's code builds gets: the Pod Security "restricted" profile plus a read-only root.

Non-root (the image's ``USER``, ``deploy/Dockerfile``), no privilege escalation, every capability dropped, the
runtime's default seccomp profile, a read-only root filesystem; the one writable path is ``/tmp``, an
``emptyDir``, where ``TMPDIR``, ``HOME`` and the caches point. The training pods
(:class:`resources.k8s_training.K8sTrainingLauncher`) and whole steps on GPU nodes
(:func:`resources.k8s_tags.gpu_op_tags`) use it; the deploy files set the same fields
(``tests/k8s/test_pod_security.py`` checks all of them against the profile's rules).
"""

from __future__ import annotations

from typing import Any

#: The image's non-root user and group (deploy/Dockerfile: ``useradd --uid 10001``, ``USER 10001``).
IMAGE_UID = 10001
#: The writable scratch volume (the root filesystem is read-only) and where it is mounted.
SCRATCH_VOLUME = "tmp"
SCRATCH_PATH = "/tmp"
#: Where temporary files, the home directory and caches go, all on the scratch volume.
SCRATCH_ENV: dict[str, str] = {
    "TMPDIR": SCRATCH_PATH,
    "HOME": SCRATCH_PATH,
    "XDG_CACHE_HOME": f"{SCRATCH_PATH}/.cache",
    "MPLCONFIGDIR": f"{SCRATCH_PATH}/.matplotlib",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def pod_security_context(uid: int = IMAGE_UID) -> dict[str, Any]:
    """PodSecurityContext (camelCase): non-root with the image's uid/gid, files group-owned by it, seccomp RuntimeDefault."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """SecurityContext (camelCase) of a container: no escalation, no capabilities, read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def scratch_volume(size_limit: str | None) -> dict[str, Any]:
    """The ``/tmp`` emptyDir (``size_limit`` None: bounded only by the node's ephemeral storage)."""
    return {"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": size_limit} if size_limit else {}}


def scratch_mount() -> dict[str, str]:
    return {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH}

"""The Pod Security Standards' "restricted" profile (Kubernetes 1.25+, version "latest") as a checker for PodSpecs.

No PyPI tool checks a PodSpec against the profile offline, so the rules are written out from
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted): each function returns
the violations of one spec (camelCase, as serialized), naming the container and the field. ``hardening_problems``
adds what aiflow asks on top: a read-only root filesystem, and mounts that name declared volumes.
"""

from __future__ import annotations

from typing import Any

#: Volume types the restricted profile allows (everything else, hostPath first, is refused).
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
#: Sysctls the baseline profile allows.
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def restricted_violations(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Every rule of the restricted profile (baseline included) that the PodSpec breaks (empty: admitted)."""
    problems: list[str] = []
    pod = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{field}: true")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds - ALLOWED_VOLUMES)} not allowed")
    for sysctl in pod.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl['name']} not allowed")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value not in ("runtime/default",) and not value.startswith("localhost/"):
            problems.append(f"AppArmor {key}={value}")
    if (pod.get("appArmorProfile") or {}).get("type") == "Unconfined":
        problems.append("pod AppArmor Unconfined")
    if pod.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    pod_seccomp = (pod.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile {pod_seccomp}")
    if (pod.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
        problems.append("pod seLinuxOptions.type not allowed")

    for container in _containers(spec):
        name, context = container.get("name", "?"), container.get("securityContext") or {}
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {sorted(set(capabilities['add']) - {'NET_BIND_SERVICE'})}")
        non_root = context.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if context.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (context.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container), got {seccomp}")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount {context['procMount']}")
        if (context.get("seLinuxOptions") or {}).get("type") not in SELINUX_TYPES:
            problems.append(f"{name}: seLinuxOptions.type not allowed")
        if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
            problems.append(f"{name}: AppArmor Unconfined")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def hardening_problems(spec: dict[str, Any]) -> list[str]:
    """aiflow's own rules beyond the profile: read-only root filesystem; every mount names a declared volume, once."""
    problems = []
    volumes = {v["name"] for v in spec.get("volumes", [])}
    if len(volumes) != len(spec.get("volumes", [])):
        problems.append("two volumes share a name")
    for container in _containers(spec):
        name, context = container.get("name", "?"), container.get("securityContext") or {}
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true (writable paths as emptyDir)")
        paths = [m["mountPath"] for m in container.get("volumeMounts", [])]
        if len(paths) != len(set(paths)):
            problems.append(f"{name}: a path is mounted twice")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{name}: mounts {mount['name']}, which is no volume of the pod")
    return problems

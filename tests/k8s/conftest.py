"""Fixtures for the Kubernetes boundary tests: a throwaway kubeconfig and the stand-in CoreV1Api wiring."""

from __future__ import annotations

import logging
import time

import kubernetes
import pytest
import yaml
from dagster_k8s.client import DagsterKubernetesClient

from tests.k8s.standin import StandInCoreV1Api


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "k8s_boundary: Kubernetes tested at its boundary (schemas, stand-in API); no cluster runs here"
    )


@pytest.fixture
def kubeconfig(tmp_path):
    """A syntactically real kubeconfig, loaded by the real ``kubernetes.config.load_kube_config``.

    Its server is never contacted: every API call goes to the stand-in. The client's global default
    Configuration is restored afterwards.
    """
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": "https://stand-in.invalid:6443"}}],
                "users": [{"name": "stand-in", "user": {"token": "not-a-real-token"}}],
                "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in"}}],
                "current-context": "stand-in",
            }
        )
    )
    saved = kubernetes.client.Configuration.get_default_copy()
    yield str(path)
    kubernetes.client.Configuration.set_default(saved)


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """Make ``DagsterKubernetesClient.production_client()`` return a client on the stand-in API.

    This is the only thing replaced: PipesK8sClient, wait_for_pod, the log reader and our launcher
    run unchanged. Call the returned factory with the stand-in's options.
    """

    def install(**options) -> StandInCoreV1Api:
        workdir = tmp_path / "pods"
        workdir.mkdir(exist_ok=True)
        api = StandInCoreV1Api(workdir, **options)

        def production_client(batch_api_override=None, core_api_override=None):
            return DagsterKubernetesClient(
                batch_api=batch_api_override, core_api=api, logger=logging.info, sleeper=time.sleep, timer=time.time
            )

        monkeypatch.setattr(DagsterKubernetesClient, "production_client", staticmethod(production_client))
        return api

    return install

"""BOUNDARY tests of the Kubernetes training path: no cluster runs here (manifests, stand-in API)."""

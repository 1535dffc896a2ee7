"""A small NetworkPolicy evaluator (networking.k8s.io/v1 semantics) for the boundary tests: may this pod reach that peer?

Pods are (namespace, labels); a peer outside the cluster is an IP address. A connection is allowed when the
source's egress allows it AND the destination's ingress allows it; a side that no policy of its type selects is
open (Kubernetes' default). Rules: podSelector (policy's namespace), namespaceSelector (+ podSelector), ipBlock
(cidr minus except; matched against external addresses only - pod IPs are not modelled), ports with protocol
(default TCP), numeric or named ports (a named port matches the destination container's port of that name).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    #: container port name -> number (for named ports in policies)
    ports: dict[str, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.namespace, tuple(sorted(self.labels.items()))))


Peer = Pod | str  # a pod, or an IP address outside the cluster


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """LabelSelector semantics: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist); {} selects all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {operator}")
    return True


def namespace_labels(namespace: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": namespace}  # set by the API server on every namespace


def peer_matches(peer_rule: dict, policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in peer_rule:
        if isinstance(peer, Pod):
            return False
        block, address = peer_rule["ipBlock"], ipaddress.ip_address(peer)
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except") or [])
    if not isinstance(peer, Pod):
        return False
    if "namespaceSelector" in peer_rule:
        if not selects(peer_rule["namespaceSelector"], namespace_labels(peer.namespace)):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(peer_rule.get("podSelector", {}), peer.labels)


def port_matches(rule_ports: list[dict] | None, port: int, protocol: str, destination: Peer) -> bool:
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        wanted = rule_port.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = destination.ports.get(wanted) if isinstance(destination, Pod) else None
        if wanted == port or (wanted is not None and rule_port.get("endPort") and wanted <= port <= rule_port["endPort"]):
            return True
    return False


def _policies_for(policies: list[dict], pod: Pod, kind: str) -> list[dict]:
    return [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and kind in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], pod.labels)
    ]


def egress_allows(policies: list[dict], source: Pod, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    selected = _policies_for(policies, source, "Egress")
    if not selected:
        return True
    for policy in selected:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if (not peers or any(peer_matches(p, policy["metadata"]["namespace"], destination) for p in peers)) and port_matches(
                rule.get("ports"), port, protocol, destination
            ):
                return True
    return False


def ingress_allows(policies: list[dict], source: Peer, destination: Pod, port: int, protocol: str = "TCP") -> bool:
    selected = _policies_for(policies, destination, "Ingress")
    if not selected:
        return True
    for policy in selected:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if (not peers or any(peer_matches(p, policy["metadata"]["namespace"], source) for p in peers)) and port_matches(
                rule.get("ports"), port, protocol, destination
            ):
                return True
    return False


def allowed(policies: list[dict], source: Peer, destination: Peer, port: int, protocol: str = "TCP") -> bool:
    """Whether ``source`` may open a connection to ``destination`` on ``port`` under ``policies``."""
    out = egress_allows(policies, source, destination, port, protocol) if isinstance(source, Pod) else True
    into = ingress_allows(policies, source, destination, port, protocol) if isinstance(destination, Pod) else True
    return out and into

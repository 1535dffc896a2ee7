"""A ValidatingAdmissionPolicy evaluator (admissionregistration.k8s.io/v1 semantics) for the boundary tests, on cel-python.

No API server runs here, so this does what the server's admission step does with a policy, its binding and its
parameter, and evaluates every CEL expression for real with ``celpy`` (cel-python, a CEL implementation from PyPI):

* match: ``matchConstraints`` (resourceRules: group, version, resource, operation; namespaceSelector on the
  namespace's ``kubernetes.io/metadata.name`` label, which the API server sets on every namespace), then every
  ``matchCondition`` (all true, else the policy does not apply; an error is a refusal under ``failurePolicy: Fail``);
* the binding's ``paramRef`` (a missing parameter: refused with ``parameterNotFoundAction: Deny``);
* ``variables`` in order, visible to later ones as ``variables.NAME``;
* every validation: false -> its ``message``; an error or a non-bool -> refused (``failurePolicy: Fail``).

Where cel-python and the API server's CEL (cel-go with Kubernetes' libraries) differ, the policy keeps to what both
have: ``has()``, the ``all``/``exists``/``map``/``filter`` macros, ``in``, ``startsWith``, ``size()``, ``dyn()``,
the conditional operator and error absorption by ``&&``/``||``. cel-python has NO optional syntax (``a.?b``,
``orValue``) and none of Kubernetes' extension libraries (strings ``split``/``join``, lists, sets, regex ``find``,
``authorizer``, quantity, url, ip): an expression using them fails to compile here, so a test catches it. Not
modelled: the server's static type check against the OpenAPI schema (warnings in the policy's status) and its cost
limits; variables are evaluated eagerly (the server evaluates them lazily - same results for expressions that
cannot fail, which the policy's variables are written to be).
"""

from __future__ import annotations

from dataclasses import dataclass

import celpy
from celpy.celtypes import BoolType

_ENV = celpy.Environment()


def _program(expression: str):
    return _ENV.program(_ENV.compile(expression))


def _cel(value):
    return celpy.json_to_cel(value)


@dataclass
class Decision:
    matched: bool
    #: Messages of the refused validations (or why the request was refused without them); empty: admitted.
    refusals: list[str]

    @property
    def admitted(self) -> bool:
        return not self.refusals


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if selector.get("matchExpressions"):
        raise NotImplementedError("namespaceSelector.matchExpressions")
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _rule_matches(rule: dict, group: str, version: str, resource: str, operation: str) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    return (
        has(rule["apiGroups"], group)
        and has(rule["apiVersions"], version)
        and has(rule["resources"], resource)
        and has(rule["operations"], operation)
    )


class AdmissionPolicy:
    """A ValidatingAdmissionPolicy with its binding and the objects its paramRef may name (by (namespace, name))."""

    def __init__(self, policy: dict, binding: dict, params: dict[tuple[str, str], dict]):
        assert policy["kind"] == "ValidatingAdmissionPolicy" and binding["kind"] == "ValidatingAdmissionPolicyBinding"
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        self.policy, self.binding, self.params = policy, binding, params
        spec = policy["spec"]
        # Compile everything up front: an expression cel-python cannot parse fails here, not silently later.
        self.conditions = [(c["name"], _program(c["expression"])) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], _program(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(_program(v["expression"]), v["message"]) for v in spec["validations"]]

    def review(self, obj: dict, *, username: str, namespace: str, operation: str = "CREATE") -> Decision:
        """What the API server decides about ``obj`` (a Pod or a Job, v1) created in ``namespace`` by ``username``."""
        group, _, version = obj["apiVersion"].rpartition("/")
        resource = {"Pod": "pods", "Job": "jobs"}[obj["kind"]]
        spec = self.policy["spec"]
        constraints = spec["matchConstraints"]
        if not _selects(constraints.get("namespaceSelector"), {"kubernetes.io/metadata.name": namespace}):
            return Decision(False, [])
        if not any(_rule_matches(r, group, version, resource, operation) for r in constraints["resourceRules"]):
            return Decision(False, [])

        request = {
            "kind": {"group": group, "version": version, "kind": obj["kind"]},
            "resource": {"group": group, "version": version, "resource": resource},
            "operation": operation,
            "namespace": namespace,
            "name": obj.get("metadata", {}).get("name", ""),
            "userInfo": {"username": username},
        }
        activation = {"object": _cel(obj), "oldObject": None, "request": _cel(request)}
        fail_closed = spec.get("failurePolicy", "Fail") == "Fail"
        for name, program in self.conditions:
            try:
                result = program.evaluate(activation)
            except celpy.CELEvalError as error:
                return Decision(True, [f"matchCondition {name} failed: {str(error)[:200]}"] if fail_closed else [])
            if not isinstance(result, BoolType):
                return Decision(True, [f"matchCondition {name}: not a bool"] if fail_closed else [])
            if not result:
                return Decision(False, [])

        ref = self.binding["spec"].get("paramRef")
        if ref is not None:
            param = self.params.get((ref.get("namespace", namespace), ref["name"]))
            if param is None:
                denied = ref["parameterNotFoundAction"] == "Deny"
                return Decision(True, [f"no params found for binding {self.binding['metadata']['name']}"] if denied else [])
            activation["params"] = _cel(param)

        variables: dict = {}
        activation["variables"] = _cel(variables)
        for name, program in self.variables:
            try:
                variables[name] = program.evaluate(activation)
            except celpy.CELEvalError as error:
                return Decision(True, [f"variable {name} failed: {str(error)[:200]}"] if fail_closed else [])
            activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in variables.items()})

        refusals = []
        for program, message in self.validations:
            try:
                result = program.evaluate(activation)
            except celpy.CELEvalError as error:
                if fail_closed:
                    refusals.append(f"expression failed ({message}): {str(error)[:200]}")
                continue
            if not isinstance(result, BoolType):
                refusals.append(f"expression returned {type(result).__name__}, not bool ({message})")
            elif not result:
                refusals.append(message)
        if "Deny" not in self.binding["spec"]["validationActions"]:
            return Decision(True, [])  # Warn / Audit only: the request goes through
        return Decision(True, refusals)

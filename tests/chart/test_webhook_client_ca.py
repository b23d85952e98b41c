"""webhook.clientCA: the chart mounts the API server's client CA into the operator and sets
PAYBILL_WEBHOOK_CLIENT_CA (handlers/admission.py), so only a caller with that CA's client certificate reaches the
admission webhooks; without it nothing is mounted and the setting is absent."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from paybill.handlers.admission import CLIENT_CA_ENV, CLIENT_NAMES_ENV

from .rendering import CHART, RELEASE, run_helm, template, values_args
from .test_chart import DEFAULTS, SCHEMA, _env, merged, operator_pod

MOUNT = "/etc/paybill/webhook-client-ca"


def client_ca_volume(docs: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    pod = operator_pod(docs)
    [container] = pod["containers"]
    volumes = [v for v in pod["volumes"] if v["name"] == "webhook-client-ca"]
    mounts = [m for m in container["volumeMounts"] if m["name"] == "webhook-client-ca"]
    return (volumes[0] if volumes else None), (mounts[0] if mounts else None)


def test_without_a_client_ca_nothing_is_mounted_or_set() -> None:
    docs = template()
    assert client_ca_volume(docs) == (None, None)
    assert CLIENT_CA_ENV not in _env(docs) and CLIENT_NAMES_ENV not in _env(docs)


@pytest.mark.parametrize(
    ("source", "volume"),
    [
        ({"configMapName": "apiserver-client-ca"}, {"configMap": {"name": "apiserver-client-ca"}}),
        ({"secretName": "apiserver-client-ca"}, {"secret": {"secretName": "apiserver-client-ca"}}),
    ],
    ids=["configmap", "secret"],
)
def test_a_client_ca_is_mounted_read_only_and_named_to_the_operator(
    source: dict[str, str], volume: dict[str, Any]
) -> None:
    docs = template({"webhook": {"clientCA": {**source, "key": "bundle.pem", "names": ["kube-apiserver", "b"]}}})
    mounted, mount = client_ca_volume(docs)
    assert mounted is not None and mount == {"name": "webhook-client-ca", "mountPath": MOUNT, "readOnly": True}
    [(kind, spec)] = [(k, v) for k, v in mounted.items() if k != "name"]
    assert {kind: {k: v for k, v in spec.items() if k != "items"}} == volume
    assert spec["items"] == [{"key": "bundle.pem", "path": "bundle.pem"}]
    env = _env(docs)
    assert env[CLIENT_CA_ENV] == f"{MOUNT}/bundle.pem"
    assert env[CLIENT_NAMES_ENV] == "kube-apiserver,b"
    assert env["PAYBILL_WEBHOOK_CERT_DIR"]  # HTTPS, which the operator requires for a client CA


def test_both_sources_names_without_a_ca_and_bad_names_are_refused() -> None:
    for values in (
        {"webhook": {"clientCA": {"configMapName": "a", "secretName": "b"}}},
        {"webhook": {"clientCA": {"configMapName": "A_b"}}},
        {"webhook": {"clientCA": {"configMapName": "a", "names": ["x,y"]}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(merged(DEFAULTS, values), SCHEMA)
        result = run_helm("template", RELEASE, str(CHART), *values_args(values), check=False)
        assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr
    unnamed = {"webhook": {"clientCA": {"names": ["kube-apiserver"]}}}
    result = run_helm("template", RELEASE, str(CHART), *values_args(unnamed), check=False)
    assert result.returncode != 0 and "webhook.clientCA.names names client certificates" in result.stderr


def test_a_ca_without_names_is_refused_unless_it_is_said_to_sign_nothing_else() -> None:
    """The cluster's client CA signs every user's and kubelet's certificate: with it and no names, any of them could
    POST a review naming any approver."""
    any_client = {"webhook": {"clientCA": {"configMapName": "apiserver-client-ca"}}}
    result = run_helm("template", RELEASE, str(CHART), *values_args(any_client), check=False)
    assert result.returncode != 0 and "webhook.clientCA: set names" in result.stderr
    dedicated = merged(any_client, {"webhook": {"clientCA": {"dedicated": True}}})
    env = _env(template(dedicated))
    assert env[CLIENT_CA_ENV] == f"{MOUNT}/ca.crt" and CLIENT_NAMES_ENV not in env
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(merged(DEFAULTS, {"webhook": {"clientCA": {"dedicated": "yes"}}}), SCHEMA)

"""The chart turns facility automation on from values: the gateway gets its job database (a
PostgreSQL URL from a Secret, or SQLite for a single replica), the bucket-event webhook's port,
token and rules ConfigMap, a Service port and a NetworkPolicy rule for it; combinations that would
split the jobs or open an unauthenticated webhook are refused at render time."""

from __future__ import annotations

import json

import pytest
from test_deploy_network import OUTSIDE, STRANGER, Source, admitted, pods

from nanolens_gateway.automation.events import parse_rules

RULES = [{"bucket": "raw", "prefix": "lab/tem/", "suffix": ".tif", "analysis": "particle_sizes",
          "options": {"method": "cnn"}},
         {"bucket": "raw", "prefix": "lab/sem/", "analysis": "sem_image", "options": {"embed": "lab"}}]
ON = {"automation": {"enabled": True, "databaseSecret": "jobs-db",
                     "events": {"enabled": True, "tokenSecret": "minio-webhook", "rules": RULES}}}


def gateway_container(rendered) -> dict:
    deployment = next(d for d in rendered.kind("Deployment")
                      if d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_off_by_default(render):
    env = env_of(gateway_container(render({})))
    assert "NANOLENS_JOBS_DB" not in env and "NANOLENS_EVENTS_PORT" not in env
    assert not any(d["metadata"]["name"].endswith("-automation") for d in render({}).kind("ConfigMap"))


def test_jobs_and_events_are_wired_from_values(render):
    rendered = render(ON)
    container = gateway_container(rendered)
    env = env_of(container)
    assert env["NANOLENS_JOBS_DB"] == {"secretKeyRef": {"name": "jobs-db", "key": "url"}}
    assert env["NANOLENS_EVENTS_TOKEN"] == {"secretKeyRef": {"name": "minio-webhook", "key": "token"}}
    assert env["NANOLENS_EVENTS_PORT"] == "8090" and env["NANOLENS_JOB_CONCURRENCY"] == "2"
    assert {"name": "events", "containerPort": 8090, "protocol": "TCP"} in container["ports"]
    # the rules file the gateway reads is the ConfigMap's, and the gateway's own loader accepts it
    mount = next(m for m in container["volumeMounts"] if m["name"] == "automation")
    assert env["NANOLENS_EVENT_RULES"] == mount["mountPath"] + "/rules.json"
    config = next(d for d in rendered.kind("ConfigMap") if d["metadata"]["name"].endswith("-automation"))
    assert json.loads(config["data"]["rules.json"]) == {"rules": RULES}
    assert len(parse_rules(config["data"]["rules.json"], "the ConfigMap")) == 2
    service = next(s for s in rendered.kind("Service") if s["metadata"]["name"].endswith("gateway"))
    assert any(p["name"] == "events" and p["port"] == 8090 for p in service["spec"]["ports"])


def test_the_webhook_port_takes_the_release_pods_only_unless_widened(render):
    rendered = render(ON)
    found = pods(rendered)
    minio = Source("minio", found["minio"]["metadata"]["labels"])
    assert admitted(rendered, found["gateway"], "events", minio)
    assert not admitted(rendered, found["gateway"], "events", OUTSIDE)
    assert not admitted(rendered, found["gateway"], "events", STRANGER)
    storage = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "storage"}}}]
    widened = render({"automation": {**ON["automation"], "events": {**ON["automation"]["events"], "from": storage}}})
    outside_minio = Source("minio-elsewhere", {"app": "minio"}, "storage")
    assert admitted(widened, pods(widened)["gateway"], "events", outside_minio)


@pytest.mark.parametrize("values, words", [
    ({"automation": {"enabled": True}}, "needs automation.databaseSecret"),
    ({"automation": {"enabled": False, "events": {"enabled": True, "tokenSecret": "t"}}}, "needs automation.enabled"),
    ({"automation": {"enabled": True, "databaseSecret": "db", "events": {"enabled": True}}}, "tokenSecret"),
])
def test_combinations_that_would_split_jobs_or_open_the_webhook_are_refused(render, values, words):
    with pytest.raises(Exception, match=words):
        render(values)


def test_one_gateway_replica_may_keep_its_jobs_in_sqlite(render):
    single = {"automation": {"enabled": True},
              "services": {"gateway": {"autoscaling": {"enabled": False}, "replicas": 1}}}
    assert env_of(gateway_container(render(single)))["NANOLENS_JOBS_DB"] == "/tmp/nanolens-jobs.sqlite"

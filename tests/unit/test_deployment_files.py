"""docker-compose.yml, herald/deploy/, the Dockerfile and the README stay true to the code.

The deployment files name things the code defines (``HERALD_*`` variables, ports, metric
names, the readiness path) and things each other defines (services, mount paths, Prometheus
jobs): a rename on either side breaks a deployment silently, so these tests cross-check them.
``docker-compose config`` (run by ``.ci/run``) checks the file against Compose's own schema.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from engine.settings import Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "herald" / "deploy"
FIELDS = {f"HERALD_{name.upper()}" for name in Settings.field_names()}
ROLES = {"worker", "projector", "api"}
TOPOLOGY = {"worker": 3, "worker-high": 2, "projector": 2, "api": 2}
"""Replicas of each role service by default: issue 14's fault-tolerance topology (``worker-high``:
high-priority ingest in processes of its own, docs/deployment.md)."""
EXPORTED_ELSEWHERE = {
    "kafka_consumergroup_lag_sum": "kafka-exporter",
    "haproxy_frontend_current_sessions": "lb",
    "haproxy_backend_active_servers": "lb",
}
"""Metrics of the dashboard that no Herald role exports, and the compose service that does."""
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def role_services() -> dict[str, dict[str, Any]]:
    """Compose services running a Herald role, by service name."""
    return {name: s for name, s in services().items() if s.get("command", [None])[0] in ROLES}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts and volumes of a service: target path -> source."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


def code_metrics() -> set[str]:
    """Sample names of every metric the code declares with prometheus_client, plus the
    process and platform collectors prometheus_client registers by default."""
    names: set[str] = set()
    # By the kind in the callee's name: prometheus_client's classes, its custom-collector
    # families (figures computed on scrape) and the code's own wrappers (``_ReadModelGauge``).
    kinds = {
        "CounterMetricFamily": ("_total",),
        "Counter": ("_total",),
        "Gauge": ("",),
        "Histogram": ("_bucket", "_sum", "_count"),
        "Summary": ("_sum", "_count"),
    }
    for package in ("schemas", "engine", "streams", "projections", "api", "herald"):
        for path in (ROOT / package).rglob("*.py"):
            source = path.read_text()
            if "prometheus_client" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if not isinstance(node, ast.Call):
                    continue
                callee = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                kind = next((k for k in kinds if k in callee), None)
                if kind is None or not (node.args and isinstance(node.args[0], ast.Constant)):
                    continue
                if not isinstance(node.args[0].value, str):
                    continue
                base = node.args[0].value.removesuffix("_total")
                names.update(base + suffix for suffix in kinds[kind])
    for family in REGISTRY.collect():
        names.update(sample.name for sample in family.samples if family.name.startswith(("process_", "python_")))
    return names


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, keywords, labels and ranges removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboards" / "herald.json").read_text())
    return loaded


def prometheus_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_compose_runs_every_production_role_with_known_settings() -> None:
    assert set(role_services()) == set(TOPOLOGY)
    assert {s["command"][0] for s in role_services().values()} == ROLES
    for name, service in services().items():
        env = service.get("environment", {})
        unknown = {k for k in env if k.startswith("HERALD_")} - FIELDS
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
    assert {"kafka", "postgres", "redis"} <= set(services())


def test_every_setting_compose_passes_parses() -> None:
    for name, service in role_services().items():
        env = {k: str(v) for k, v in service["environment"].items()}
        env["HERALD_JWT_SECRET"] = "x" * 32  # compose interpolates it from the operator's shell
        settings = Settings.from_env(env)
        assert not settings.extra, name
        assert settings.metrics_port, f"{name}: Prometheus could not scrape it"
        assert settings.http_host == "0.0.0.0", f"{name}: /metrics unreachable from the network"  # noqa: S104


def test_scaled_roles_have_no_fixed_ports_or_container_names() -> None:
    for name, service in role_services().items():
        # `--scale api=2` fails on a fixed host port or container name (two containers cannot share them).
        assert "ports" not in service, f"{name} publishes a host port: it cannot be scaled"
        assert "container_name" not in service and "hostname" not in service, name
        assert service["deploy"]["replicas"] == TOPOLOGY[name]
    # Each WebSocket is a descriptor: the capacity model's 25,000 connections per replica must fit.
    assert services()["api"]["ulimits"]["nofile"]["soft"] >= 2 * 25_000
    published = {name: s["ports"] for name, s in services().items() if "ports" in s}
    assert published.pop("lb") == ["8000:8000"], "the load balancer is the entry point"
    for name, ports in published.items():
        assert all(p.startswith("127.0.0.1:") for p in ports), f"{name} is published beyond the host's loopback"


def test_load_balancer_checks_readyz_on_every_api_replica() -> None:
    lb = services()["lb"]
    assert lb["image"].startswith("haproxy:")
    config_path = mounts(lb)["/usr/local/etc/haproxy/haproxy.cfg"]
    config = (ROOT / config_path).read_text()
    api_port = Settings.from_env(
        {k: str(v) for k, v in services()["api"]["environment"].items()} | {"HERALD_JWT_SECRET": "x" * 32}
    ).http_port
    assert re.search(rf"^\s*server-template api \d+ api:{api_port}$", config, re.M), (
        "backend must follow the api replicas"
    )
    assert "http-check send meth GET uri /readyz" in config and "http-check expect status 200" in config
    assert re.search(r"^\s*bind :8000$", config, re.M)
    assert "127.0.0.11:53" in config, "replicas are found through Docker's DNS (resolvers), not fixed addresses"
    # Clients send their token as ?token=: the log line must carry the path only (%HP), never
    # the request line or URI (httplog's %r, %HU).
    assert "option httplog" not in config and re.search(r"%(\{[^}]*\})?HP\b", config)
    assert not re.search(r"%(\{[^}]*\})?(r|HU)\b", config), "the access log would record WebSocket tokens"
    maxconn = re.search(r"^\s*maxconn (\d+)$", config, re.M)
    assert maxconn and lb["ulimits"]["nofile"]["soft"] > 2 * int(maxconn.group(1)), "HAProxy refuses to start"
    tunnel = re.search(r"timeout tunnel (\d+)h", config)
    assert tunnel and int(tunnel.group(1)) * 3600 > Settings().ws_heartbeat_seconds, (
        "WebSockets would be cut between pings"
    )


def test_kafka_keeps_its_log_on_the_volume_with_a_fixed_cluster_id() -> None:
    kafka = services()["kafka"]
    env = kafka["environment"]
    log_dir = env["KAFKA_LOG_DIRS"]
    assert mounts(kafka).get(log_dir) in compose()["volumes"], "the event log must live on a named volume"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"]), "a KRaft cluster id: 16 bytes, base64url"


def test_prometheus_scrapes_every_replica_of_every_role() -> None:
    jobs = prometheus_jobs()
    for name, service in role_services().items():
        port = int(service["environment"]["HERALD_METRICS_PORT"])
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["type"] == "A" and sd["port"] == port, name
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                assert target.split(":")[0] in services(), f"{job['job_name']} scrapes {target}, not a compose service"
    prometheus = services()["prometheus"]
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == "./herald/deploy/prometheus.yml"


def test_dashboard_shows_the_five_views_with_metrics_that_exist() -> None:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    titles = " ".join(p["title"].lower() for p in panels)
    for view in ("throughput", "latency", "lag", "dead letters", "connections"):
        assert view in titles, f"no {view} panel"
    known = code_metrics()
    scraped = {
        t.split(":")[0]
        for job in prometheus_jobs().values()
        for s in job.get("static_configs", [])
        for t in s["targets"]
    }
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= promql_metrics(target["expr"])
    for metric in used:
        if metric in EXPORTED_ELSEWHERE:
            assert EXPORTED_ELSEWHERE[metric] in scraped, f"{metric}: its exporter is not scraped"
        else:
            assert metric in known, f"the dashboard reads {metric}, which no code exports"
    assert {"notifications_created_total", "active_websocket_connections", "kafka_consumergroup_lag_sum"} <= used


def test_promql_metric_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, channel) (rate(x_bucket{job=~"a|b"}[$__rate_interval]))) + y'
    assert promql_metrics(expr) == {"x_bucket", "y"}


def test_grafana_is_provisioned_from_the_repository() -> None:
    grafana = services()["grafana"]
    volumes = mounts(grafana)
    assert volumes["/etc/grafana/provisioning"] == "./herald/deploy/grafana/provisioning"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/herald.yml").read_text())
    (provider,) = providers["providers"]
    assert volumes[provider["options"]["path"]] == "./herald/deploy/grafana/dashboards"
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_dockerfile_ships_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("schemas", "engine", "streams", "projections", "api", "herald"):
        assert f"COPY {package} {package}" in dockerfile


def test_build_context_leaves_the_dev_environment_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "test-output"} <= ignored
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {part for line in dockerfile.splitlines() if line.startswith("COPY ") for part in line.split()[1:-1]}
    assert not copied & ignored, "the Dockerfile copies something the build context leaves out"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_section = readme.split("\n## ")[1]
    assert first_section.startswith("Two commands")
    assert "make dev" in first_section and "make test" in first_section

"""deploy/: the image, compose.yaml and the Kubernetes manifests run what the tests run.

No container engine runs here, so nothing is started; the files are checked instead::

    lint        hadolint on the Dockerfile; kubernetes-validate (strict) on every manifest
    commands    Dockerfile CMD, compose `command:`s and k8s `command`s are exactly
                tests/serve_processes.py's API_COMMAND / WORKER_COMMAND, which the CLI parses
    settings    every MUSICGEN_* name is a setting; the env of each container loads with
                load_settings, and its ports, volumes and probes agree with the result
    routes      probes and HEALTHCHECK hit /healthz and /readyz; every metric the Grafana
                dashboard and the HPA read is in a real app's /metrics
    compose     two API services behind nginx, Redis with AOF, Prometheus targets, Grafana paths
    k8s         ConfigMap = configs/production.yaml, worker GPU, limits, non-root, TLS ingress

A missing hadolint or kubernetes-validate skips its test; ``MUSICGEN_REQUIRE_DEPLOY_TOOLS=1``
(.ci/run) makes that a failure. ``docker compose config`` runs where the compose plugin is
installed (Debian 12 packages none, so it is no CI requirement); the compose checks below do
not depend on it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from serve_processes import API_COMMAND, SHARED_ENV, WORKER_COMMAND
from tooling import missing_tool

from musicgen_edu.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.33.0"                 # a recent release kubernetes-validate carries schemas for
IMAGE = "musicgen-edu"                 # our image's name in compose.yaml and the manifests
# MUSICGEN_* variables that choose the settings file rather than set a field (settings.py)
FILE_VARIABLES = {"MUSICGEN_ENV", "MUSICGEN_CONFIG_FILE", "MUSICGEN_CONFIG_DIR"}
KEYS = "deploy-test-key-123:admin"     # production refuses to start without a key
STREAM_CLOSE_S = 3                     # streams end within shutdown_grace_s + 3 s (serve/app.py)


# --- reading the files ---------------------------------------------------------------------

def tool(name: str) -> str:
    """The path of command-line tool ``name`` (PATH or this venv); skip or fail without it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        missing_tool(f"{name} is not installed (pip install -e '.[dev]')",
                     "MUSICGEN_REQUIRE_DEPLOY_TOOLS")
    return found


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    instructions, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        word, _, rest = text.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


@functools.cache
def compose(name: str = "compose.yaml") -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def manifests() -> tuple[dict, ...]:
    return tuple(doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text())
            if doc)


def find(kind: str, name: str) -> dict:
    matches = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name} in deploy/k8s, found {len(matches)}"
    return matches[0]


def pod_specs() -> dict[str, dict]:
    """Workload name -> its pod template's spec (Deployments and StatefulSets)."""
    return {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in manifests()
            if d["kind"] in ("Deployment", "StatefulSet")}


def ours(container: dict) -> bool:
    return container["image"].split(":")[0].rsplit("/", 1)[-1] == IMAGE


def container_env(container: dict) -> dict[str, str]:
    """The container's variables: envFrom ConfigMaps (secrets left out), then its env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def settings_from(env: dict[str, str], config_dir: Path, monkeypatch) -> Settings:
    """load_settings() as a process with exactly ``env`` (+ an API key) would run it."""
    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("MUSICGEN_API_KEYS", KEYS)
    monkeypatch.setenv("MUSICGEN_CONFIG_DIR", str(config_dir))
    return load_settings()


def metric_names(text: str) -> set[str]:
    """Series names a Prometheus query may use, from the text exposition format (a labelled
    family without samples yet still has its # TYPE line)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_sum", name + "_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
        elif line and not line.startswith("#"):
            names.add(re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line).group())
    return names


@pytest.fixture(scope="module")
def app_facts(tmp_path_factory):
    """A real app's answers to the probe paths and its /metrics text, once the default model
    is loaded (the development profile: edu-tiny, offline; tmp storage)."""
    from fastapi.testclient import TestClient

    from musicgen_edu.serve import create_app

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MUSICGEN_")}
    try:
        settings = load_settings("development", storage_dir=tmp_path_factory.mktemp("storage"))
        app = create_app(settings)
        with TestClient(app) as client:
            status = {path: client.get(path).status_code for path in ("/healthz", "/readyz")}
            deadline = time.monotonic() + 60            # the default model loads in a thread
            while status["/readyz"] == 503 and time.monotonic() < deadline:
                time.sleep(0.1)
                status["/readyz"] = client.get("/readyz").status_code
            status["/nowhere"] = client.get("/nowhere").status_code
            metrics = client.get("/metrics")
            status["/metrics"] = metrics.status_code
    finally:
        os.environ.update(saved)
    return {"status": status, "metrics": metrics.text}


# --- lint ----------------------------------------------------------------------------------

def test_hadolint_passes_and_every_ignore_says_why(tmp_path):
    hadolint = tool("hadolint")
    run = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            before = lines[number - 1].strip()
            assert before.startswith("#") and "hadolint ignore" not in before, (
                f"Dockerfile line {number + 1} ignores a rule without a comment saying why")
    assert not (REPO / ".hadolint.yaml").exists(), "rules are ignored inline, with a reason"
    # the linter does reject things: an untagged base image and an unpinned pip install
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    run = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode != 0 and "DL3006" in run.stdout and "DL3013" in run.stdout


def test_kubernetes_validate_strict_passes_on_every_manifest():
    if importlib.util.find_spec("kubernetes_validate") is None:
        tool("kubernetes-validate")                # skips, or fails when the tools are required
    import kubernetes_validate

    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            try:   # raises for a schema violation, and for a kind it has no schema of
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: "
                            f"{exc.message} at {'.'.join(map(str, exc.path))}", pytrace=False)
    # strict mode rejects a misspelt field
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    # secret.yaml stays out: `kubectl apply -k` must not overwrite the real keys
    assert set(listed) == {p.name for p in manifest_files()} - {"secret.yaml"}


def test_docker_compose_config_accepts_the_files():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"],
                                        capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed (the checks below parse "
                    "compose.yaml themselves)")
    env = {**os.environ, "MUSICGEN_API_KEYS": KEYS}
    for files in (["compose.yaml"], ["compose.yaml", "compose.gpu.yaml"]):
        args = [a for f in files for a in ("-f", str(DEPLOY / f))]
        run = subprocess.run([docker, "compose", *args, "config", "-q"], capture_output=True,
                             text=True, env=env)
        assert run.returncode == 0, run.stderr


# --- the commands --------------------------------------------------------------------------

def test_image_runs_the_api_command_by_default():
    stage = final_stage()
    assert not [args for word, args in stage if word == "ENTRYPOINT"]
    commands = [json.loads(args) for word, args in stage if word == "CMD"]
    assert commands == [API_COMMAND]


def test_compose_runs_exactly_the_process_commands():
    services = compose()["services"]
    commands = {name: s.get("command") for name, s in services.items()
                if s["image"].startswith(IMAGE)}
    assert sorted(n for n, c in commands.items() if c == API_COMMAND) == ["api1", "api2"]
    assert [n for n, c in commands.items() if c == WORKER_COMMAND] == ["worker"]
    assert set(commands) == {"api1", "api2", "worker"}, commands
    assert not [n for n in commands if "entrypoint" in services[n]]
    gpu = compose("compose.gpu.yaml")["services"]
    assert not [n for n, s in gpu.items() if {"command", "entrypoint", "image"} & set(s)]


def test_k8s_runs_exactly_the_process_commands():
    specs = pod_specs()
    commands = {name: [c["command"] + c.get("args", []) for c in spec["containers"] if ours(c)]
                for name, spec in specs.items()}
    assert commands["musicgen-api"] == [API_COMMAND]
    assert commands["musicgen-worker"] == [WORKER_COMMAND]
    assert {n for n, c in commands.items() if c} == {"musicgen-api", "musicgen-worker"}


@pytest.mark.parametrize("command", [API_COMMAND, WORKER_COMMAND], ids=["api", "worker"])
def test_the_commands_are_real_cli_commands(command):
    """The CLI parses each command (options included) without running it."""
    import typer

    from musicgen_edu.cli import app

    group = typer.main.get_command(app)
    assert command[0] == "musicgen-edu"
    assert command[1] in group.commands, f"musicgen-edu has no command {command[1]!r}"
    sub = group.commands[command[1]]
    sub.make_context(command[1], list(command[2:]))   # click exits on an unknown option


# --- settings, ports, probes ---------------------------------------------------------------

def test_every_musicgen_variable_is_a_setting():
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    named = {v for p in files for v in re.findall(r"\bMUSICGEN_[A-Z0-9_]+", p.read_text())}
    fields = {"MUSICGEN_" + name.upper() for name in Settings.model_fields}
    assert named, "deploy/ names no MUSICGEN_* variable"
    assert named - fields - FILE_VARIABLES == set()
    # and the processes share the settings the process-level tests share
    assert set(SHARED_ENV) <= set(find("ConfigMap", "musicgen-env")["data"])
    compose_env = compose()["services"]["worker"]["environment"]
    assert set(SHARED_ENV) <= set(compose_env)


@pytest.mark.parametrize("workload", ["musicgen-api", "musicgen-worker"])
def test_k8s_containers_load_their_settings(workload, tmp_path, monkeypatch):
    spec = pod_specs()[workload]
    (container,) = spec["containers"]
    env = container_env(container)
    config = find("ConfigMap", "musicgen-config")["data"]
    for name, text in config.items():
        (tmp_path / name).write_text(text)
    settings = settings_from({k: v for k, v in env.items() if k != "MUSICGEN_CONFIG_DIR"},
                             tmp_path, monkeypatch)
    assert settings.env == "production" and settings.store == "redis"
    assert settings.redis_url.startswith("redis://redis:")   # the Service in redis.yaml
    find("Service", "redis")
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v for v in spec["volumes"]}
    assert claims["config"]["configMap"]["name"] == "musicgen-config"
    assert mounts["config"] == env["MUSICGEN_CONFIG_DIR"]     # where load_settings looks
    assert claims["storage"]["persistentVolumeClaim"]["claimName"] == "musicgen-storage"
    assert Path(mounts["storage"]) == settings.storage_dir
    assert claims["models"]["persistentVolumeClaim"]["claimName"] == "musicgen-models"
    assert Path(mounts["models"]) in Path(env["HF_HOME"]).parents
    assert Path(env["HF_HOME"]) in settings.cache_dir.parents
    port = settings.api_port if workload == "musicgen-api" else settings.worker_port
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert spec["containers"][0] is container
    annotations = find("Deployment", workload)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"
    # probes: alive = /healthz, ready = /readyz, on the process's own port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert port_number(container, container[probe]["httpGet"]["port"]) == port
    # SIGTERM: the grace period outlasts the service's own shutdown
    assert spec["terminationGracePeriodSeconds"] > settings.shutdown_grace_s + STREAM_CLOSE_S


@pytest.mark.parametrize("service", ["api1", "api2", "worker"])
def test_compose_services_load_their_settings(service, monkeypatch):
    spec = compose()["services"][service]
    env = {k: v for k, v in spec["environment"].items() if not str(v).startswith("${")}
    settings = settings_from(env, REPO / "configs", monkeypatch)  # the image's /etc/musicgen
    assert settings.env == "production" and settings.store == "redis"
    assert settings.redis_url.startswith("redis://redis:")
    assert "${MUSICGEN_API_KEYS" in spec["environment"]["MUSICGEN_API_KEYS"]
    volumes = dict(v.split(":")[:2][::-1] for v in spec["volumes"])   # target -> source
    assert volumes[str(settings.storage_dir)] == "storage"
    (models_at,) = [t for t, s in volumes.items() if s == "models"]
    assert Path(models_at) in settings.cache_dir.parents
    assert Path(models_at) in Path(env["HF_HOME"]).parents
    port = settings.worker_port if service == "worker" else settings.api_port
    assert spec["expose"] == [str(port)]
    check = " ".join(spec["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in check
    grace = float(spec["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_grace_s + STREAM_CLOSE_S


def test_image_healthcheck_and_settings(monkeypatch):
    stage = final_stage()
    (check,) = [args for word, args in stage if word == "HEALTHCHECK"]
    default_port = Settings.model_fields["api_port"].default
    assert "MUSICGEN_API_PORT" in check and f"'{default_port}'" in check
    assert re.search(r"/healthz'", check)
    env = dict(pair.split("=", 1) for word, args in stage if word == "ENV"
               for pair in shlex.split(args))
    settings = settings_from({k: v for k, v in env.items() if k.startswith("MUSICGEN_")
                              and k != "MUSICGEN_CONFIG_DIR"}, REPO / "configs", monkeypatch)
    assert settings.api_host == "0.0.0.0"                   # reachable from outside
    volumes = json.loads(next(args for word, args in stage if word == "VOLUME"))
    assert str(settings.storage_dir) in volumes
    assert any(Path(v) in settings.cache_dir.parents for v in volumes)
    assert any(Path(v) in Path(env["HF_HOME"]).parents for v in volumes)
    copies = [args.split() for word, args in stage if word == "COPY"]
    assert ["configs/", env["MUSICGEN_CONFIG_DIR"] + "/"] in copies


def test_probes_hit_real_routes(app_facts):
    assert app_facts["status"] == {"/healthz": 200, "/readyz": 200, "/metrics": 200,
                                   "/nowhere": 404}


def test_dashboard_and_hpa_metrics_exist(app_facts):
    exposed = metric_names(app_facts["metrics"])
    dashboard = json.loads((DEPLOY / "grafana/dashboards/musicgen.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for q in queries for m in re.findall(r"\bmusicgen_[a-z0-9_]+", q)}
    assert len(used) >= 10, used
    assert used - exposed == set()
    hpa_metrics = {m[m["type"].lower()]["metric"]["name"]
                   for d in manifests() if d["kind"] == "HorizontalPodAutoscaler"
                   for m in d["spec"]["metrics"] if m["type"] in ("External", "Pods", "Object")}
    assert hpa_metrics == {"musicgen_queue_depth"}
    assert hpa_metrics <= exposed


# --- compose structure ---------------------------------------------------------------------

def test_compose_nginx_balances_both_api_services():
    upstream = re.search(r"upstream \w+ \{(.*?)\}", (DEPLOY / "nginx.conf").read_text(), re.S)
    servers = re.findall(r"^\s*server\s+([\w.-]+:\d+)", upstream.group(1), re.M)
    services = compose()["services"]
    api = sorted(f"{n}:{s['expose'][0]}" for n, s in services.items()
                 if s.get("command") == API_COMMAND)
    assert sorted(servers) == api and len(api) == 2
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    listen = re.search(r"listen (\d+);", (DEPLOY / "nginx.conf").read_text()).group(1)
    assert [p.split(":")[-1] for p in nginx["ports"]] == [listen]


def test_redis_keeps_every_acknowledged_job():
    def flags(command):
        return dict(zip(command[1::2], command[2::2]))

    for command in (compose()["services"]["redis"]["command"],
                    pod_specs()["redis"]["containers"][0]["command"]):
        assert command[0] == "redis-server"
        assert flags(command) == {"--appendonly": "yes", "--appendfsync": "always"}
    assert "redis:/data" in compose()["services"]["redis"]["volumes"]


def test_prometheus_scrapes_every_process():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())

    def job_targets(job: dict) -> list[str]:   # static targets, and names found by DNS
        static = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        dns = [f"{name}:{sd['port']}" for sd in job.get("dns_sd_configs", [])
               for name in sd["names"]]
        return sorted(static + dns)

    targets = {job["job_name"]: job_targets(job) for job in config["scrape_configs"]}
    services = compose()["services"]
    expected = {"musicgen-api": sorted(f"{n}:{s['expose'][0]}" for n, s in services.items()
                                       if s.get("command") == API_COMMAND),
                "musicgen-worker": [f"worker:{services['worker']['expose'][0]}"]}
    assert targets == expected
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_grafana_provisioning_is_mounted_where_grafana_reads_it():
    grafana = compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    for source in mounts:
        assert (DEPLOY / source).is_dir(), source
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/musicgen.yaml").read_text())
    (path,) = [p["options"]["path"] for p in provider["providers"]]
    assert mounts["./grafana/dashboards"] == path
    source = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose()["services"]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/musicgen.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}


def test_compose_volumes_are_declared_and_shared():
    spec = compose()
    named = {v.split(":")[0] for s in spec["services"].values() for v in s.get("volumes", [])
             if not v.startswith("./")}
    assert named == set(spec["volumes"])
    ours_ = [s for s in spec["services"].values() if s["image"].startswith(IMAGE)]
    assert all(sorted(s["volumes"]) == sorted(ours_[0]["volumes"]) for s in ours_)


# --- Kubernetes ----------------------------------------------------------------------------

def test_configmap_is_configs_production_yaml():
    data = find("ConfigMap", "musicgen-config")["data"]
    assert data == {"production.yaml": (REPO / "configs" / "production.yaml").read_text()}, (
        "deploy/k8s/configmap.yaml differs from configs/production.yaml; regenerate it "
        "(the command is in its header)")


def test_worker_requests_a_gpu_and_the_api_none():
    (worker,) = pod_specs()["musicgen-worker"]["containers"]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == \
        worker["resources"]["limits"]["nvidia.com/gpu"]
    (api,) = pod_specs()["musicgen-api"]["containers"]
    assert "nvidia.com/gpu" not in api["resources"]["limits"]


def test_every_container_has_requests_and_limits():
    for name, spec in pod_specs().items():
        for container in spec["containers"] + spec.get("initContainers", []):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


def test_everything_runs_as_non_root():
    user = [args for word, args in final_stage() if word == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert int(user[-1].split(":")[0]) > 0
    for name, spec in pod_specs().items():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, name
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert "runAsUser" not in container["securityContext"], name
    for name, service in compose()["services"].items():
        assert str(service.get("user", "")).split(":")[0] not in ("0", "root"), name


def test_ingress_terminates_tls_for_the_api_service():
    ingress = find("Ingress", "musicgen-api")
    tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert all(t["secretName"] for t in ingress["spec"]["tls"])
    rules = ingress["spec"]["rules"]
    assert {r["host"] for r in rules} <= tls_hosts
    service = find("Service", "musicgen-api")
    names = {p["name"] for p in service["spec"]["ports"]}
    for rule in rules:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "musicgen-api" and backend["port"]["name"] in names
    (api,) = pod_specs()["musicgen-api"]["containers"]
    targets = {p["targetPort"] for p in service["spec"]["ports"]}
    assert targets <= {p["name"] for p in api["ports"]}
    labels = find("Deployment", "musicgen-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_hpas_scale_the_deployments():
    hpas = {d["metadata"]["name"]: d["spec"] for d in manifests()
            if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"musicgen-api", "musicgen-worker"}
    for name, spec in hpas.items():
        target = spec["scaleTargetRef"]
        find(target["kind"], target["name"])
        assert target["name"] == name and spec["minReplicas"] <= spec["maxReplicas"]
    assert hpas["musicgen-api"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpas["musicgen-api"]["minReplicas"] >= 2

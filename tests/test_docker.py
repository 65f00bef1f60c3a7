"""The container files agree with the code, and ``robustops deploy`` works against real servers.

No Docker engine runs here, so nothing is built or composed. What can be checked is checked: the
compose file parses; every service's command uses a CLI of the venv with flags it has; ports
bind to localhost; every variable is documented in docker/.env.example; volumes, healthchecks
and start order; the Dockerfile's user, pins, entry point and healthcheck (run here as a plain
process). The slow tests run the compose services' own commands as plain processes: a Prefect
server and ``robustops deploy``; and the whole stack on a local Postgres (MLflow serving
artifacts, Prefect on asyncpg, the deployments, a process worker that runs the pipeline).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.net import answers, free_port, wait_for
from tests.helpers.runs import BIN, TINY_CONFIG, server_run

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_TEXT = (DOCKER / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
ROBUSTOPS_SERVICES = [name for name, s in SERVICES.items() if "build" in s]
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
PLAIN_ENV = os.environ | {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "COLUMNS": "250",  # help text of typer/click CLIs: no flag cut off at the terminal's width
}

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}; $$ is a literal $.
VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution, on a string or recursively on lists and mappings."""
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.groups()
        have = env.get(name)
        if op in (":-", ":?") and not have or op in ("-", "?") and have is None:
            if op.endswith("?"):
                raise AssertionError(f"${{{name}}} is required: {arg}")
            return arg
        return have or ""

    return VARIABLE.sub(sub, value)


def argv(service: dict) -> list[str]:
    """What the container runs: the entry point (the image's: robustops) and the command."""
    entrypoint = service.get("entrypoint", ["robustops"])
    command = service.get("command", ["--help"])
    assert isinstance(entrypoint, list) and isinstance(command, list), "exec form only: no shell parsing"
    return entrypoint + command


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


# --- the compose file -------------------------------------------------------------------------


def test_compose_parses_and_the_robustops_services_build_the_image():
    assert set(SERVICES) == {"postgres", "mlflow", "prefect-server", "worker", "deploy"}
    assert set(ROBUSTOPS_SERVICES) == {"mlflow", "prefect-server", "worker", "deploy"}
    for name in ROBUSTOPS_SERVICES:
        build = SERVICES[name]["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT and (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile", name
        assert SERVICES[name]["image"] == SERVICES["mlflow"]["image"], "one image for all"


@pytest.mark.parametrize("name", ROBUSTOPS_SERVICES)
def test_every_command_uses_a_venv_cli_with_the_flags_it_has(name):
    args = interpolate(argv(SERVICES[name]), env_example())
    exe = BIN / args[0]
    assert exe.exists(), f"{name}: {args[0]} is not a command of the venv"
    words = []  # the subcommand path: the words before the first flag
    for a in args[1:]:
        if a.startswith("-"):
            break
        words.append(a)
    helped = subprocess.run([str(exe), *words, "--help"], capture_output=True, text=True, env=PLAIN_ENV,
                            timeout=120)  # fmt: skip
    assert helped.returncode == 0, f"{name}: {shlex.join([args[0], *words])} --help failed: {helped.stderr}"
    flags = [a.split("=")[0] for a in args[1:] if a.startswith("--")]
    assert flags, name
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helped.stdout), (
            f"{name}: {shlex.join([args[0], *words])} has no {flag}"
        )


def test_the_deploy_service_names_a_config_that_the_image_holds():
    args = interpolate(argv(SERVICES["deploy"]), env_example())
    assert args[:2] == ["robustops", "deploy"]
    config = args[args.index("--config") + 1]
    assert (ROOT / config).is_file()  # the image copies configs/ to its WORKDIR
    assert "COPY --chown=robustops:robustops configs ./configs" in DOCKERFILE


def test_ports_bind_to_localhost_only():
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert set(published) == {"mlflow", "prefect-server"}  # postgres stays on the compose network
    env = env_example()
    for name, ports in published.items():
        for port in ports:
            host, outside, inside = interpolate(port, env).split(":")
            assert host == "127.0.0.1" and outside.isdigit() and inside.isdigit(), (name, port)


def test_every_variable_is_documented_in_env_example_and_env_is_ignored():
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE_TEXT) if m.group(1)}
    documented = env_example()
    assert used <= set(documented), f"not in docker/.env.example: {sorted(used - set(documented))}"
    assert set(documented) <= used, f"documented but unused: {sorted(set(documented) - used)}"
    assert not re.search(r"\$(?![{$])", COMPOSE_TEXT.replace("$$", "")), "a bare $VAR: use ${VAR}"
    interpolate(COMPOSE, documented)  # every required ${VAR:?...} is set by the example
    with pytest.raises(AssertionError, match=r"POSTGRES_PASSWORD\} is required"):
        interpolate(COMPOSE, {k: v for k, v in documented.items() if k != "POSTGRES_PASSWORD"})
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "docker/.env must be git-ignored"
    assert "docker/.env" in (ROOT / ".dockerignore").read_text().split()


def test_volumes_are_declared_and_bind_mounts_exist():
    declared = set(COMPOSE["volumes"])
    used = set()
    for name, s in SERVICES.items():
        for v in s.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: {source} does not exist"
            else:
                used.add(source)
    assert used == declared
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "mlflow-artifacts:/mlartifacts" in SERVICES["mlflow"]["volumes"]
    # A fresh named volume takes its owner from the image's folder: the non-root user's.
    assert "chown robustops:robustops /app /data /mlartifacts" in DOCKERFILE


def test_healthchecks_order_the_start():
    for name, s in SERVICES.items():
        if s.get("restart", COMPOSE["x-robustops"]["restart"]) != "no":
            assert s.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dep, cond in s.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
            assert "healthcheck" in SERVICES[dep], (name, dep)
    assert set(SERVICES["worker"]["depends_on"]) == {"prefect-server", "mlflow"}
    assert set(SERVICES["deploy"]["depends_on"]) == {"prefect-server"}
    assert "pg_isready -h 127.0.0.1" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])


def test_clients_reach_the_servers_by_their_service_names():
    worker = SERVICES["worker"]["environment"]
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert SERVICES["deploy"]["environment"]["PREFECT_API_URL"] == worker["PREFECT_API_URL"]
    # MLflow refuses Host headers it does not know: the worker's must be allowed.
    allowed = env_example()["MLFLOW_ALLOWED_HOSTS"].split(",")
    assert "mlflow:5000" in allowed
    assert "${MLFLOW_ALLOWED_HOSTS:-" + env_example()["MLFLOW_ALLOWED_HOSTS"] + "}" in COMPOSE_TEXT


# --- the Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_multistage_pinned_and_non_root():
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith("AS builder")
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", DOCKERFILE).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert re.fullmatch(r"postgres:\d+\.\d+-bookworm", SERVICES["postgres"]["image"])
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert dict(steps)["ENTRYPOINT"] == '["robustops"]'
    assert "WORKDIR" in dict(steps)
    for pair in ("MLFLOW_DISABLE_TELEMETRY=true", "DO_NOT_TRACK=1", "PREFECT_SERVER_ANALYTICS_ENABLED=false"):
        assert pair in DOCKERFILE


def test_dockerfile_installs_cpu_torch_and_the_pinned_tree():
    assert re.search(r"ARG TORCH_INDEX=https://download\.pytorch\.org/whl/cpu\n", DOCKERFILE)
    torch = [rest for word, rest in dockerfile_instructions() if word == "RUN" and "torch==" in rest]
    assert torch == ['pip install --no-deps --index-url "${TORCH_INDEX}" torch==2.13.0']
    assert 'pip install -c constraints.txt ".[server]"' in DOCKERFILE
    pins = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in pins
    pyproject = (ROOT / "pyproject.toml").read_text()
    server = re.search(r"server = \[(.*?)\]", pyproject, re.S).group(1)
    for requirement in re.findall(r'"([^"]+)"', server):
        assert "==" in requirement and requirement in pins, requirement


def test_docker_context_holds_what_the_dockerfile_copies_and_nothing_local():
    ignored = [p for p in (ROOT / ".dockerignore").read_text().split() if not p.startswith("#")]
    for must in (".git", ".venv", "mlruns", "mlartifacts", "mlflow.db", "**/__pycache__", ".pytest_cache"):
        assert must in ignored, must
    copied = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            copied += [p for p in rest.split()[:-1] if not p.startswith("--")]
    assert set(copied) >= {"constraints.txt", "pyproject.toml", "README.md", "robustops", "tasks", "flows"}
    for path in copied:
        assert (ROOT / path).exists(), path
        assert path not in ignored and path.split("/")[0] not in ignored, f".dockerignore drops {path}"


def test_image_entrypoint_and_healthcheck_run_as_plain_processes():
    steps = dict(dockerfile_instructions())
    health = steps["HEALTHCHECK"]
    command = health.split(" CMD ", 1)[1]
    assert "--interval=" in health and "--timeout=" in health
    ran = subprocess.run(["sh", "-c", command], env=PLAIN_ENV, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    default = json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])
    ran = subprocess.run([str(BIN / default[0]), *default[1:]], env=PLAIN_ENV, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert ran.returncode == 0 and "deploy" in ran.stdout


def test_kubernetes_job_template_patch_in_the_docs_keeps_prefects_args():
    """docs/deployment.md's jq patch: the job's container gets command /usr/bin/env, so the image's
    ENTRYPOINT (robustops) does not swallow Prefect's args (prefect flow-run execute)."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    patch = re.search(r"jq '([^']+)'", doc).group(1)
    if not shutil.which("jq"):
        pytest.skip("jq is not installed")
    # What `prefect work-pool get-default-base-job-template --type kubernetes` prints: the server
    # serves it from this file of the prefect package (without prefect-kubernetes installed).
    import prefect

    bundled = (
        Path(prefect.__file__).parent / "server/api/collections_data/views/aggregate-worker-metadata.json"
    )
    (kubernetes,) = [w for c in json.loads(bundled.read_text()).values() for w in c.values()
                     if w.get("type") == "kubernetes"]  # fmt: skip
    template = json.dumps(kubernetes["default_base_job_configuration"])
    patched = subprocess.run(["jq", patch], input=template, capture_output=True, text=True, check=True).stdout
    container = json.loads(patched)["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == ["/usr/bin/env"] and container["args"] == "{{ command }}"


# --- robustops deploy -------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["http://127.0.0.1:{port}/api", None])
def test_deploy_without_a_server_is_one_line_and_exit_2(api, tmp_path):
    env = {k: v for k, v in PLAIN_ENV.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    if api:
        env["PREFECT_API_URL"] = api.format(port=free_port())
    ran = subprocess.run([str(BIN / "robustops"), "deploy", "--pool", "p"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 2
    assert ran.stderr.startswith("error: ") and ran.stderr.count("\n") == 1, ran.stderr
    assert ("no Prefect server answers at" if api else "PREFECT_API_URL is not set") in ran.stderr
    assert "Traceback" not in ran.stderr + ran.stdout


@contextlib.contextmanager
def _processes():
    """Started processes, stopped (and their log files closed) on the way out."""
    procs, files = [], contextlib.ExitStack()

    def start(args: list[str], log: Path, **kw) -> subprocess.Popen:
        out = files.enter_context(log.open("w"))
        procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kw))
        return procs[-1]

    try:
        yield start
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        files.close()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server (sqlite), started the way tests/test_e2e.py starts it."""
    root = tmp_path_factory.mktemp("deploy")
    port = free_port()
    env = PLAIN_ENV | {
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    with _processes() as start:
        start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
              root / "server.log", env=env)  # fmt: skip
        wait_for("the Prefect server", lambda: answers(f"{env['PREFECT_API_URL']}/health"), 120)
        yield {"root": root, "env": env, "api": env["PREFECT_API_URL"]}


def _deploy(server: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    ran = subprocess.run([str(BIN / "robustops"), "deploy", *args], env=server["env"], cwd=server["root"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert not check or ran.returncode == 0, ran.stdout + ran.stderr
    return ran


def _pool_deployments(api: str, pool: str) -> dict[str, dict]:
    body = {"work_pools": {"name": {"any_": [pool]}}}
    found = httpx.post(f"{api}/deployments/filter", json=body, timeout=30).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}, timeout=30).json()}
    return {f"{flows[d['flow_id']]}/{d['name']}": d for d in found}


@pytest.mark.slow
def test_deploy_registers_the_three_deployments_to_a_process_pool(prefect_server):
    api = prefect_server["api"]
    batch = prefect_server["root"] / "batch.npz"
    args = ["--pool", "robustops-test", "--set", "retrain.cron=0 4 * * 1", "--set", "monitor.cron='*/30 * * * *'",
            "--set", f"monitor.batch_path={batch}"]  # fmt: skip
    out = _deploy(prefect_server, *args).stdout
    assert "work pool 'robustops-test' (process, created)" in out
    assert "prefect worker start --pool robustops-test" in out
    pool = httpx.get(f"{api}/work_pools/robustops-test", timeout=30).json()
    assert pool["type"] == "process" and pool["base_job_template"]["job_configuration"]["command"]

    deps = _pool_deployments(api, "robustops-test")
    assert set(deps) == {
        "robustness-pipeline/pipeline",
        "robustness-monitor/monitor",
        "robustness-retrain/retrain",
    }
    for name, d in deps.items():
        # By module path, importable wherever robustops is installed: no pull steps, no storage.
        module, _, fn = d["entrypoint"].rpartition(".")
        assert ":" not in d["entrypoint"] and not d["pull_steps"], d["entrypoint"]
        assert callable(getattr(__import__(module, fromlist=[fn]), fn)), name
        assert d["parameters"]["cfg"]["retrain"]["cron"] == "0 4 * * 1"
    crons = {name: [s["schedule"].get("cron") for s in d["schedules"]] for name, d in deps.items()}
    assert crons == {
        "robustness-pipeline/pipeline": [],
        "robustness-monitor/monitor": ["*/30 * * * *"],
        "robustness-retrain/retrain": ["0 4 * * 1"],
    }
    assert deps["robustness-monitor/monitor"]["parameters"]["batch"] == str(batch)
    for name in ("robustness-pipeline/pipeline", "robustness-retrain/retrain"):
        assert deps[name]["global_concurrency_limit"]["limit"] == 1
        assert deps[name]["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30).json()
    (drift,) = [a for a in automations if a["name"] == "retrain-on-drift"]
    assert drift["trigger"]["expect"] == ["robustops.drift.detected"]
    assert drift["actions"][0]["deployment_id"] == deps["robustness-retrain/retrain"]["id"]
    assert drift["actions"][0]["parameters"] == {"batch": "{{ event.payload.batch }}"}

    # Deploying again updates the same three deployments (a changed schedule included).
    out = _deploy(prefect_server, "--pool", "robustops-test", "--set", "retrain.cron=null").stdout
    assert "(process)" in out and "created" not in out
    again = _pool_deployments(api, "robustops-test")
    assert {n: d["id"] for n, d in again.items()} == {n: d["id"] for n, d in deps.items()}
    assert again["robustness-retrain/retrain"]["schedules"] == []

    # --image belongs to pools that run containers; such a pool needs one.
    ran = _deploy(prefect_server, "--pool", "robustops-test", "--image", "r/robustops:1", check=False)
    assert ran.returncode == 2 and "runs no containers" in ran.stderr and ran.stderr.count("\n") == 1
    template = {"job_configuration": {"image": "{{ image }}"},
                "variables": {"type": "object", "properties": {"image": {"type": "string"}}}}  # fmt: skip
    body = {"name": "k8s-test", "type": "kubernetes", "base_job_template": template}
    httpx.post(f"{api}/work_pools/", json=body, timeout=30).raise_for_status()
    ran = _deploy(prefect_server, "--pool", "k8s-test", check=False)
    assert ran.returncode == 2 and "pass --image" in ran.stderr
    _deploy(prefect_server, "--pool", "k8s-test", "--image", "registry.example/robustops:1")
    k8s = _pool_deployments(api, "k8s-test")
    assert len(k8s) == 3 and {d["job_variables"]["image"] for d in k8s.values()} == {
        "registry.example/robustops:1"
    }


# --- the compose stack, its services run as plain processes -----------------------------------


@contextlib.contextmanager
def _postgres(user: str, password: str):
    """A throwaway local Postgres server on a free port, password auth over TCP; its port."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl") and shutil.which("psql")):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, psql)")
    # Postgres refuses to run as root: run it as the postgres user where the tests run as root.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not shutil.which("runuser"):
        pytest.skip("running as root without runuser")
    root = Path(tempfile.mkdtemp(prefix="robustops-pg-"))
    root.chmod(0o755)
    (root / "pw").write_text(password)
    (root / "socket").mkdir()
    if as_user:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
        shutil.chown(root / "socket", "postgres")
    port = free_port()
    data = root / "data"
    try:
        subprocess.run([*as_user, shutil.which("initdb"), "-D", str(data), "-U", user, f"--pwfile={root / 'pw'}",
                        "--auth-local=trust", "--auth-host=scram-sha-256"], check=True, capture_output=True,
                       timeout=120)  # fmt: skip
        opts = f"-p {port} -k {root / 'socket'} -c listen_addresses=127.0.0.1"
        subprocess.run([*as_user, shutil.which("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                        "-w", "start"], check=True, capture_output=True, timeout=120)  # fmt: skip
        yield port
    finally:
        subprocess.run([*as_user, shutil.which("pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_compose_stack_runs_as_plain_processes_and_a_worker_runs_the_pipeline(tmp_path):
    """Each service's own command, environment and healthcheck from compose.yaml, with the
    container's host names, ports and paths mapped to this machine: Postgres (the postgres image's
    init: POSTGRES_DB, then postgres-init.sql), MLflow on Postgres serving artifacts, Prefect on
    Postgres, the deploy service, and a worker that runs a (tiny) pipeline run from the pool."""
    values = env_example()
    user, password = values["POSTGRES_USER"], values["POSTGRES_PASSWORD"]
    with _postgres(user, password) as pg, _processes() as start:
        ports = {"mlflow": free_port(), "prefect": free_port(), "worker": free_port()}
        home, data, artifacts = tmp_path / "home", tmp_path / "data", tmp_path / "mlartifacts"
        for d in (home, data, artifacts):
            d.mkdir()
        mapping = {  # container -> this machine
            "@postgres:5432/": f"@127.0.0.1:{pg}/",
            "http://mlflow:5000": f"http://127.0.0.1:{ports['mlflow']}",
            "http://prefect-server:4200": f"http://127.0.0.1:{ports['prefect']}",
            "127.0.0.1:5000": f"127.0.0.1:{ports['mlflow']}",
            "127.0.0.1:4200": f"127.0.0.1:{ports['prefect']}",
            "127.0.0.1:8080": f"127.0.0.1:{ports['worker']}",
            "0.0.0.0": "127.0.0.1",
            "/mlartifacts": str(artifacts),
            "/data/": f"{data}/",
            "/home/robustops": str(home),
        }

        def local(value):
            if isinstance(value, list):
                return [local(v) for v in value]
            for outside, inside in mapping.items():
                value = value.replace(outside, inside)
            return value

        def service(name: str) -> tuple[list[str], dict[str, str]]:
            s = interpolate(SERVICES[name], values)
            args = local(argv(s))
            if "--port" in args:
                i = args.index("--port") + 1
                args[i] = str({"5000": ports["mlflow"], "4200": ports["prefect"]}[args[i]])
            env = PLAIN_ENV | {"PREFECT_HOME": str(home / ".prefect"), "HOME": str(home)}
            env |= {k: local(str(v)) for k, v in s.get("environment", {}).items()}
            return [str(BIN / args[0]), *args[1:]], env

        def healthcheck(name: str) -> bool:
            test = interpolate(SERVICES[name]["healthcheck"]["test"], values)
            _, env = service(name)
            if test[0] == "CMD-SHELL":
                cmd = ["sh", "-c", local(test[1])]
            else:
                cmd = [shutil.which(test[1], path=env["PATH"]), *local(test[2:])]
            env = env | {"POSTGRES_USER": user, "PGPORT": str(pg)}
            return subprocess.run(cmd, env=env, capture_output=True, timeout=60).returncode == 0

        # The postgres image's first start: POSTGRES_DB, then the init scripts.
        pg_env = PLAIN_ENV | {"PGPASSWORD": password}
        psql = [shutil.which("psql"), "-h", "127.0.0.1", "-p", str(pg), "-U", user, "-v", "ON_ERROR_STOP=1"]
        subprocess.run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {SERVICES['postgres']['environment']['POSTGRES_DB']}"],
                       env=pg_env, check=True, capture_output=True)  # fmt: skip
        init = SERVICES["postgres"]["volumes"][1].split(":")[0]
        subprocess.run(
            [*psql, "-d", "postgres", "-f", str(DOCKER / init)], env=pg_env, check=True, capture_output=True
        )
        assert healthcheck("postgres")

        for name in ("mlflow", "prefect-server"):
            args, env = service(name)
            start(args, tmp_path / f"{name}.log", env=env, cwd=tmp_path)
        wait_for("the MLflow server's healthcheck", lambda: healthcheck("mlflow"), 180)
        wait_for("the Prefect server's healthcheck", lambda: healthcheck("prefect-server"), 180)
        mlflow_url, api = f"http://127.0.0.1:{ports['mlflow']}", f"http://127.0.0.1:{ports['prefect']}/api"

        # MLflow accepts the worker's Host header (mlflow:5000) and refuses unknown hosts.
        search = f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=10"
        assert httpx.get(search, headers={"Host": "mlflow:5000"}, timeout=30).status_code == 200
        assert httpx.get(search, headers={"Host": "evil.example"}, timeout=30).status_code == 403

        # The deploy service (the image's WORKDIR holds configs/), then the worker.
        args, env = service("deploy")
        ran = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        pool = values["WORK_POOL"]
        assert set(_pool_deployments(api, pool)) == {
            "robustness-pipeline/pipeline", "robustness-monitor/monitor", "robustness-retrain/retrain"
        }  # fmt: skip

        # A pipeline run from the UI's "Run" with a custom parameter: a tiny config, tracked by
        # the MLflow server (tracking_uri null: the worker's MLFLOW_TRACKING_URI).
        from robustops.catalog import load_config

        cfg = load_config(TINY_CONFIG, [*server_run(tmp_path, 1), "mlflow.tracking_uri=null", "defences=[]",
                                        "mlflow.registered_model=stack-digits"])  # fmt: skip
        dep = httpx.get(f"{api}/deployments/name/robustness-pipeline/pipeline", timeout=30).json()
        run = httpx.post(f"{api}/deployments/{dep['id']}/create_flow_run",
                         json={"parameters": {"cfg": cfg.model_dump(mode="json")}}, timeout=30).json()  # fmt: skip

        args, env = service("worker")
        env |= {
            "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
            "PREFECT_WORKER_WEBSERVER_PORT": str(ports["worker"]),
        }
        workdir = tmp_path / "worker"  # not the repo: the worker imports the flows by module path
        workdir.mkdir()
        worker = start(args, tmp_path / "worker.log", env=env, cwd=workdir)
        wait_for("the worker's healthcheck", lambda: healthcheck("worker"), 120)

        def state() -> str:
            return httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()["state_type"]

        wait_for("the flow run to finish", lambda: state() in ("COMPLETED", "FAILED", "CRASHED"), 400)
        assert state() == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        assert worker.poll() is None

        # The run's records went through the MLflow server: runs in Postgres, artifacts in the
        # artifact volume, the model in the registry.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_url)
        exp = client.get_experiment_by_name("robustops")
        assert exp.artifact_location.startswith("mlflow-artifacts:")
        (parent,) = client.search_runs([exp.experiment_id], "tags.`robustops.kind` = 'pipeline'")
        assert parent.info.status == "FINISHED"
        assert any(artifacts.rglob("scorecard.html")), (
            "artifacts were not served into --artifacts-destination"
        )
        assert client.get_model_version_by_alias("stack-digits", "champion").version == "1"
        count = subprocess.run([*psql, "-d", "mlflow", "-tAc", "select count(*) from runs"], env=pg_env,
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert int(count) >= 2  # the parent and the baseline's nested run
        tables = subprocess.run([*psql, "-d", "prefect", "-tAc", "select count(*) from flow_run"], env=pg_env,
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert int(tables) >= 1

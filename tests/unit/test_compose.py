"""docker/compose.yaml and docker/Dockerfile: every command, volume and
healthcheck refers to things that exist (no docker engine needed)."""

from __future__ import annotations

import re
import shlex
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from cli_parse import parse_command
from click.testing import CliRunner
from cryptography import x509

from coordinator import server as coordinator_server
from headcount.cli import cli
from headcount.config import load
from headcount.federation import InitOptions, init_federation
from party_node import server as node_server

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
PARTIES = ("education", "health", "justice", "immigration")
# The serving processes; `operator` runs one command on demand.
SERVERS = sorted(s for s in SERVICES if s != "operator")
CONFIG = "/fed/federation.toml"


def command_path(ctx: click.Context) -> list[str]:
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return names[::-1]


def mounts(service: str) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume entry (short syntax)."""
    out = []
    for entry in SERVICES[service].get("volumes", []):
        assert isinstance(entry, str), f"{service}: use the short volume syntax"
        source, target, *mode = entry.split(":")
        out.append((source, target, mode == ["ro"]))
    return out


def test_every_role_is_a_service() -> None:
    assert set(SERVICES) == {*PARTIES, "coordinator", "register", "operator"}
    for name, service in SERVICES.items():
        assert service["build"]["dockerfile"] == "docker/Dockerfile", name
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("service", SERVERS)
def test_command_parses_with_the_real_cli(service: str) -> None:
    command = [str(a) for a in SERVICES[service]["command"]]
    ctx = parse_command(command)
    params = ctx.params
    assert params["config_path"] == Path(CONFIG)
    assert ctx.find_root().params["log_json"] is True
    if service in PARTIES:
        assert command_path(ctx) == ["node", "serve"]
        assert params["party"] == service
    elif service == "coordinator":
        assert command_path(ctx) == ["coordinator", "serve"]
    else:
        assert command_path(ctx) == ["register", "serve"]
        assert params["out_dir"] == Path("/srv/register")
        assert (params["host"], params["port"]) == ("0.0.0.0", 8088)
    if service != "register":
        # Metrics listen inside the container and are published on loopback only.
        assert params["metrics_port"]
        published = [str(p).split(":") for p in SERVICES[service].get("ports", [])]
        assert [h for h, _, inner in published if inner == str(params["metrics_port"])] == [
            "127.0.0.1"
        ]


@pytest.mark.parametrize("service", SERVERS)
def test_certificates_read_only_and_state_on_its_own_named_volume(service: str) -> None:
    declared = set(COMPOSE["volumes"])
    entries = mounts(service)
    for shared in ("federation.toml", "linkage-schema.toml", "ca/ca.pem", "certs"):
        assert (f"./federation/{shared}", f"/fed/{shared}", True) in entries
    for source, _target, read_only in entries:
        if source.startswith((".", "/")):
            assert read_only, f"{service}: bind mount {source} must be read-only"
        else:
            assert source in declared, f"{service}: named volume {source} not declared"
    writable = [(s, t) for s, t, ro in entries if not ro]
    expected = ("register-site", "/srv/register") if service == "register" else None
    assert writable == [expected or (f"{service}-state", "/fed/state")]
    data = [(s, t) for s, t, _ in entries if t == "/fed/data"]
    # A node sees its own department's file only; nobody else sees any.
    assert data == ([(f"./data/{service}", "/fed/data")] if service in PARTIES else [])


# The private keys each service's process needs, and no others.
OWN_KEYS = {
    **{p: {f"keys/{p}.key"} for p in PARTIES},
    "coordinator": {"keys/coordinator.key", "keys/coordinator-audit.key"},
    "register": set(),
    # The operator's key is in no serving process: only here, run on demand.
    "operator": {"keys/operator.key"},
}


def materialise(service: str, federation: Path, root: Path) -> Path:
    """The service's /fed as compose assembles it from ``federation`` (the
    directory `headcount federation init` wrote as docker/federation); named
    volumes and data folders start empty. Returns the config path inside it."""
    fed = root / service
    for source, target, _ in mounts(service):
        if not target.startswith("/fed"):
            continue
        dest = fed / Path(target).relative_to("/fed")
        if Path(source).parts[0] == "federation":
            src = federation / Path(*Path(source).parts[1:])
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest)
            else:
                shutil.copy2(src, dest)
        else:
            dest.mkdir(parents=True, exist_ok=True)
    return fed / "federation.toml"


def private_keys(root: Path) -> set[str]:
    """Every file under ``root`` holding a private key, relative to ``root``."""
    return {
        str(f.relative_to(root))
        for f in root.rglob("*")
        if f.is_file() and b"PRIVATE KEY" in f.read_bytes()
    }


@pytest.fixture(scope="module")
def federation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("compose-init") / "federation"
    init_federation(
        directory,
        InitOptions(paillier_bits=1024, insecure_test_keys=True, service_hosts=True),
    )
    return directory


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_holds_only_its_own_private_keys(
    service: str, federation_dir: Path, tmp_path: Path
) -> None:
    config = materialise(service, federation_dir, tmp_path)
    assert private_keys(config.parent) == OWN_KEYS[service]
    assert "ca/ca.key" in private_keys(federation_dir)  # it exists, and stays outside
    cfg = load(config)  # loads with every certificate and only its own key
    needed = {
        **{p.name: {p.tls.key} for p in cfg.parties},
        "coordinator": {cfg.coordinator.tls.key, cfg.coordinator.audit_key},
        "register": set(),
        "operator": {cfg.operator.key},
    }[service]
    assert {str(k.relative_to(config.parent)) for k in needed} == OWN_KEYS[service]


def test_no_named_volume_is_writable_by_two_services() -> None:
    owners: dict[str, list[str]] = {}
    for service in SERVICES:
        for source, _, read_only in mounts(service):
            if not read_only and not source.startswith((".", "/")):
                owners.setdefault(source, []).append(service)
    assert all(len(v) == 1 for v in owners.values()), owners
    # The register reads the coordinator's audit log, read-only.
    assert ("coordinator-state", "/fed/state", True) in mounts("register")


@pytest.mark.parametrize("service", SERVERS)
def test_healthcheck_is_a_real_probe(service: str) -> None:
    check = SERVICES[service]["healthcheck"]
    test = [str(a) for a in check["test"]]
    assert test[0] == "CMD"
    if service == "register":
        assert test[1:3] == ["python", "-c"]
        code = test[3]
        compile(code, "<healthcheck>", "exec")
        assert "urllib.request" in code and ":8088/" in code
        return
    assert test[1] == "headcount"
    ctx = parse_command(test[2:])
    if service in PARTIES:
        assert command_path(ctx) == ["node", "health"]
        assert ctx.params["party"] == service
    else:
        assert command_path(ctx) == ["coordinator", "health"]
    assert ctx.params["config_path"] == Path(CONFIG)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_runs_read_only_without_privileges(service: str) -> None:
    spec = SERVICES[service]
    assert spec["read_only"] is True
    assert spec["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in spec["security_opt"]
    assert "/tmp" in spec["tmpfs"]


def test_services_start_after_what_they_call() -> None:
    needs = SERVICES["coordinator"]["depends_on"]
    assert set(needs) == set(PARTIES)
    assert all(v["condition"] == "service_healthy" for v in needs.values())
    assert SERVICES["register"]["depends_on"]["coordinator"]["condition"] == "service_healthy"


# -- the Dockerfile ----------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), " ".join(rest.split())))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions by stage name ("" before the first FROM)."""
    out: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for instruction, args in dockerfile():
        if instruction == "FROM":
            image, _, current = args.partition(" AS ")
            assert current, f"unnamed stage FROM {image}"
            out[current] = [("FROM", image)]
        else:
            out[current].append((instruction, args))
    return out


def args_of(instruction: str, stage: str = "runtime") -> list[str]:
    return [a for i, a in stages()[stage] if i == instruction]


def env() -> dict[str, str]:
    """The runtime stage's ENV, KEY=VALUE pairs."""
    pairs = [p for a in args_of("ENV") for p in shlex.split(a)]
    return dict(p.split("=", 1) for p in pairs)


def volumes() -> list[str]:
    return [v for a in args_of("VOLUME") for v in yaml.safe_load(a)]


def under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def apt_packages(stage: str) -> set[str]:
    """What a stage's RUNs install with apt-get."""
    out = set()
    for run in args_of("RUN", stage):
        for part in run.split("apt-get install")[1:]:
            out |= {w for w in part.split("&&")[0].split() if not w.startswith("-")}
    return out


def is_toolchain(package: str) -> bool:
    return package in {"build-essential", "gcc", "g++", "clang", "make"} or package.endswith("-dev")


def test_dockerfile_builds_wheels_in_one_stage_and_runs_without_a_compiler() -> None:
    assert list(stages()) == ["", "build", "runtime"]  # the last stage is the image
    runtime_runs = " ".join(args_of("RUN"))
    build_runs = " ".join(args_of("RUN", "build"))
    assert "build-essential" in apt_packages("build") and "pip wheel" in build_runs
    assert apt_packages("runtime") and not any(map(is_toolchain, apt_packages("runtime")))
    # The runtime installs the build stage's wheels and nothing from an index;
    # the wheels are mounted, so they leave no layer behind.
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in runtime_runs
    assert "pip install --no-cache-dir --no-index --find-links=/wheels headcount" in runtime_runs
    assert not args_of("COPY"), "the runtime copies nothing but through the wheel"


def test_dockerfile_base_is_pinned_to_an_exact_release() -> None:
    default = dict(a.split("=", 1) for i, a in stages()[""] if i == "ARG")["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", default)
    for stage in ("build", "runtime"):
        assert args_of("FROM", stage) == ["${PYTHON_IMAGE}"], stage


def test_dockerfile_pulls_no_frontend_image() -> None:
    # A `# syntax=` line makes every build pull and run that (unpinned) image
    # from Docker Hub; the engine's own frontend builds this file.
    head = (DOCKER / "Dockerfile").read_text(encoding="utf-8").lstrip().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", head, re.I), head


def test_dockerfile_entrypoint_is_the_installed_cli() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    entry = [yaml.safe_load(a) for a in args_of("ENTRYPOINT")]
    assert entry == [["headcount"]]
    assert pyproject["project"]["scripts"]["headcount"] == "headcount.cli:main"
    assert env()["HEADCOUNT_CONFIG"] == CONFIG


def test_dockerfile_runs_as_an_unprivileged_user_with_no_writable_home() -> None:
    assert args_of("USER") == ["10001:10001"]  # numeric, so runAsNonRoot can check it
    runs = " ".join(args_of("RUN"))
    assert "useradd --system --uid 10001 --user-group --home-dir /nonexistent" in runs
    assert "--no-create-home" in runs
    assert env()["HOME"] == "/nonexistent"
    assert args_of("WORKDIR") == ["/fed"]  # root's, not writable


def test_every_writable_path_is_a_declared_volume() -> None:
    declared = volumes()
    runs = " ".join(args_of("RUN"))
    owned = runs.split("chown -R 10001:10001", 1)[1].split("&&")[0].split()
    assert owned and all(under(p, declared) for p in owned), (owned, declared)
    assert all(p in owned for p in declared)  # each volume starts owned by the user
    # numba's compiled kernels and matplotlib's cache: on the cache volume,
    # since neither the install nor HOME is writable.
    for name in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        assert under(env()[name], ["/var/cache/headcount"]) and under(env()[name], declared)
    # What compose mounts writable is a volume the image declares.
    for service in SERVICES:
        for _, target, read_only in mounts(service):
            if not read_only:
                assert under(target, declared), (service, target)


def test_dockerfile_healthcheck_is_a_real_probe() -> None:
    (check,) = args_of("HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = yaml.safe_load(command)
    assert argv[0] == "headcount"
    ctx = parse_command(argv[1:])
    assert command_path(ctx) == ["health"]
    assert ctx.params["config_path"] is None  # $HEADCOUNT_CONFIG, the image's /fed


def test_dockerfile_copies_what_exists_and_installs_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copied = []
    for args in args_of("COPY", "build"):
        *sources, _ = shlex.split(args)
        copied += sources
    for source in copied:
        assert (ROOT / source).exists(), source
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= set(copied)
    # The build context's ignore file must not drop what the Dockerfile copies.
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for source in copied:
        assert re.search(rf"^!{re.escape(source)}(/\*\*)?$", ignore, re.M), source
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in " ".join(args_of("RUN", "build"))


# -- the healthcheck commands against live servers -----------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The education node and the coordinator, each started from its own
    service's mounts only (its own key, every certificate)."""
    root = tmp_path_factory.mktemp("compose")
    init_federation(root / "fed", InitOptions(paillier_bits=1024, insecure_test_keys=True))
    configs = {s: materialise(s, root / "fed", root / "services") for s in SERVICES}
    node = node_server.start(load(configs["education"]), "education")
    coord = coordinator_server.start(load(configs["coordinator"]))
    try:
        yield configs
    finally:
        coord.server.stop(grace=None)
        coord.coordinator.close()
        node.server.stop(grace=None)


def _run_healthcheck(service: str, config: Path, *extra: str) -> Any:
    test = [str(a) for a in SERVICES[service]["healthcheck"]["test"]][2:]
    args = [str(config) if a == CONFIG else a for a in test]
    return CliRunner().invoke(cli, [*args, *extra])


def test_healthchecks_pass_against_serving_processes(live: dict[str, Path]) -> None:
    for service in ("education", "coordinator"):
        result = _run_healthcheck(service, live[service])
        assert result.exit_code == 0, result.output
        assert "serving" in result.output


def test_healthcheck_fails_when_the_node_is_down(live: dict[str, Path]) -> None:
    result = _run_healthcheck("health", live["health"], "--timeout", "1")
    assert result.exit_code == 1
    assert "health" in result.output


def test_the_image_healthcheck_probes_the_server_whose_key_is_mounted(
    live: dict[str, Path],
) -> None:
    """The image's one HEALTHCHECK (`headcount health`) with each service's
    mounts: a node's and the coordinator's containers ask their own server;
    the operator's and the register's hold no server key and pass; a node
    that is down fails."""
    (check,) = args_of("HEALTHCHECK")
    argv = yaml.safe_load(check.partition(" CMD ")[2])[1:]
    for service, expected in (("education", "education"), ("coordinator", "coordinator")):
        result = CliRunner().invoke(cli, [*argv, "--config", str(live[service])])
        assert result.exit_code == 0, result.output
        assert re.fullmatch(rf"{expected} at \S+: serving\n", result.output), result.output
    for service in ("operator", "register"):
        result = CliRunner().invoke(cli, [*argv, "--config", str(live[service])])
        assert result.exit_code == 0, result.output
        assert "nothing to probe" in result.output
    result = CliRunner().invoke(cli, [*argv, "--config", str(live["health"]), "--timeout", "1"])
    assert result.exit_code == 1
    assert "health" in result.output


def test_the_operator_service_runs_commands_with_its_own_key(live: dict[str, Path]) -> None:
    """`docker compose run --rm operator status ...` runs as the operator with
    the operator service's mounts (its key and no other): it reaches the
    coordinator (status lists the nodes, the down ones as unreachable)."""
    entry = [str(a) for a in SERVICES["operator"]["entrypoint"]]
    command = [str(a) for a in SERVICES["operator"]["command"]]
    assert entry[0] == "headcount"
    args = [str(live["operator"]) if a == CONFIG else a for a in [*entry[1:], *command]]
    assert SERVICES["operator"]["profiles"] == ["operator"]  # not started by `up`
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"education\s+healthy", result.output), result.output
    assert re.search(r"health\s+DOWN", result.output), result.output


def test_federation_init_can_address_processes_by_service_name(tmp_path: Path) -> None:
    directory = tmp_path / "federation"
    result = CliRunner().invoke(
        cli,
        [
            "federation",
            "init",
            str(directory),
            "--paillier-bits",
            "1024",
            "--service-hosts",
            "--base-port",
            "50051",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = load(directory / "federation.toml")
    assert cfg.coordinator.address == "coordinator:50051"
    for party in cfg.parties:
        assert party.address.split(":")[0] == party.name
        # TLS: each server's certificate names the host it is reached by.
        cert = x509.load_pem_x509_certificate(party.tls.cert.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert party.name in names.get_values_for_type(x509.DNSName)
    assert {p.name for p in cfg.parties} == set(PARTIES)

#!/usr/bin/env bash
# Build the image and run the compose federation from it, end to end, as
# docs/operator-guide.md ("Running with Docker Compose") tells an operator to:
# build, federation files, `compose up`, every service healthy, ceremony, link,
# a project approved by each steward with their own key, a query, status, the
# register's pages, and the image's own HEALTHCHECK. Needs a container engine
# and compose (`docker compose` or `docker-compose`); CI has neither, so CI
# does not run this (tests/unit/test_compose.py and
# tests/integration/test_runtime_conditions.py check what they can without).
#
#   docker/smoke.sh                      # or: make image-smoke
#
# Environment:
#   PYTHON_IMAGE  the base (default: the Dockerfile's pinned ARG), e.g. a local
#                 stand-in where Docker Hub is unreachable (docker/standin-base.sh)
#   DOCKER        the docker client (default: docker)
#   PEOPLE        synthetic population size (default: 3000)
#   KEEP=1        leave the federation running (and its files in $WORK)
#
# It publishes what compose.yaml publishes (127.0.0.1:8088 and 9100-9104), tags
# the image headcount:latest (the name compose.yaml runs), and works in a new
# temporary directory, under the compose project name headcount-smoke.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKER=${DOCKER:-docker}
IMAGE=headcount:latest
PROJECT=headcount-smoke
PEOPLE=${PEOPLE:-3000}
export DOCKER_BUILDKIT=1 # Docker 20.10-22 need it for RUN --mount; later default to it

step() { printf '\n== %s\n' "$*"; }
fail() {
    printf 'SMOKE FAILED: %s\n' "$*" >&2
    exit 1
}

if $DOCKER compose version >/dev/null 2>&1; then
    COMPOSE=("$DOCKER" compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
else
    fail "no compose: install the compose plugin or docker-compose"
fi
$DOCKER info >/dev/null 2>&1 || fail "no container engine answers ($DOCKER info)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/headcount-smoke.XXXXXX")
cp "$ROOT/docker/compose.yaml" "$WORK/compose.yaml"
# The image runs as uid 10001: it writes the federation files here.
if [ "$(id -u)" = 0 ]; then chown 10001:10001 "$WORK"; else chmod 0777 "$WORK"; fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$WORK/compose.yaml" "$@"; }
NETWORK="${PROJECT}_default"
# Hardened as compose.yaml runs every service: read-only root, no
# capabilities, no setuid, the image's uid; $WORK mounted for files.
HARDENED=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true)

cleanup() {
    status=$?
    if [ "${KEEP:-}" = 1 ]; then
        echo "KEEP=1: the federation runs on; its files are in $WORK"
        echo "  stop it with: ${COMPOSE[*]} -p $PROJECT -f $WORK/compose.yaml down -v"
        exit $status
    fi
    if [ $status != 0 ]; then
        compose ps || true
        compose logs --no-color --tail 30 || true
    fi
    $DOCKER rm -f -v "$PROJECT-healthcheck" >/dev/null 2>&1 || true
    compose down -v --remove-orphans >/dev/null 2>&1 || true
    # Files written by uid 10001: removed by that uid.
    $DOCKER run --rm -v "$WORK:/work" --entrypoint sh "$IMAGE" -c 'rm -rf /work/* /work/.[!.]*' \
        >/dev/null 2>&1 || true
    rm -rf "$WORK" 2>/dev/null || true
    exit $status
}
trap cleanup EXIT

# One command in the image as a person would run it, with the federation's
# public files and only the private key named (or none: "-").
as() {
    local key=$1
    shift
    local mounts=(
        -v "$WORK/federation/federation.toml:/fed/federation.toml:ro"
        -v "$WORK/federation/linkage-schema.toml:/fed/linkage-schema.toml:ro"
        -v "$WORK/federation/ca/ca.pem:/fed/ca/ca.pem:ro"
        -v "$WORK/federation/certs:/fed/certs:ro"
        -v "$ROOT/docs/queries:/fed/queries:ro"
    )
    [ "$key" = - ] || mounts+=(-v "$WORK/federation/keys/$key.key:/fed/keys/$key.key:ro")
    $DOCKER run --rm --network "$NETWORK" "${HARDENED[@]}" "${mounts[@]}" "$IMAGE" "$@"
}

wait_healthy() { # CONTAINER SECONDS
    local state
    for _ in $(seq 1 "$2"); do
        state=$($DOCKER inspect --format '{{.State.Health.Status}}' "$1")
        [ "$state" = healthy ] && return 0
        sleep 1
    done
    fail "$1 is $state after $2 s"
}

step "build ($($DOCKER version --format 'engine {{.Server.Version}}'))"
build_args=()
[ -n "${PYTHON_IMAGE:-}" ] && build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
echo "base: ${PYTHON_IMAGE:-pinned default of docker/Dockerfile}"
$DOCKER build -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "${build_args[@]}" "$ROOT" \
    >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log"
    fail "the build failed (above)"
}
$DOCKER run --rm "$IMAGE" --version
$DOCKER image inspect "$IMAGE" --format \
    'user {{.Config.User}}; volumes {{json .Config.Volumes}}; healthcheck {{json .Config.Healthcheck.Test}}'
[ "$($DOCKER image inspect "$IMAGE" --format '{{.Config.User}}')" = 10001:10001 ] ||
    fail "the image does not run as 10001:10001"

step "federation files (made by the image, as uid 10001)"
$DOCKER run --rm "${HARDENED[@]}" -v "$WORK:/work" -w /work --entrypoint sh "$IMAGE" -c "
    set -e
    headcount federation init federation --service-hosts --base-port 50051 >/dev/null
    headcount synth --people $PEOPLE --out synth
    for p in education health justice immigration; do
        mkdir -p data/\$p && mv synth/\$p.csv data/\$p/
    done"

step "compose up"
compose up -d --no-build
for service in education health justice immigration coordinator register; do
    wait_healthy "$(compose ps -q $service)" 300
done
compose ps

step "the services run as compose.yaml says"
for service in education coordinator register; do
    id=$(compose ps -q $service)
    $DOCKER inspect "$id" --format \
        "$service: user {{.Config.User}} read-only {{.HostConfig.ReadonlyRootfs}} cap-drop {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}"
    compose exec -T $service sh -c \
        'grep -E "^(CapEff|NoNewPrivs)" /proc/1/status | tr -s "\t\n" "  "; ! touch /x 2>/dev/null && echo "/ not writable"'
    keys=$(compose exec -T $service sh -c 'ls /fed/keys 2>/dev/null | tr "\n" " "')
    echo "    private keys: ${keys:-none}"
done

step "operator: ceremony, link"
compose run --rm operator ceremony --config /fed/federation.toml
compose run --rm operator link --config /fed/federation.toml

step "analyst proposes a project; each steward approves it with their own key"
PROJECT_ID=childrens-commissioner-2026
as commissioner project propose --analyst commissioner --id $PROJECT_ID \
    --title "Children across departments" --parties education,health,justice,immigration \
    --purpose "Count, never name, children at risk so that services reach them" \
    --expires "$(($(date +%Y) + 1))-11-30" >/dev/null
for party in education health justice immigration; do
    as $party project approve --party $party $PROJECT_ID >/dev/null
done
as commissioner project list --analyst commissioner

step "analyst: a query"
as commissioner query --analyst commissioner --spec /fed/queries/children-with-adult-in-custody.yaml

step "operator: status"
compose run --rm operator

step "register: its pages, from the coordinator's state (read-only), verified"
page=""
for _ in $(seq 1 90); do # it rebuilds every 60 s
    page=$(compose exec -T register python -c \
        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8088/').read().decode())")
    grep -q "Audit log verified" <<<"$page" && grep -q "adult in custody" <<<"$page" && break
    sleep 2
done
grep -q "Audit log verified" <<<"$page" || fail "the register's page does not show a verified log"
grep -q "adult in custody" <<<"$page" || fail "the register does not list the query"
grep -o "All [0-9]* events form one unbroken hash chain" <<<"$page" | head -1
grep -o "Head hash <code>[0-9a-f]*" <<<"$page" | sed 's/<code>/ /' | head -1

step "the image's own HEALTHCHECK (no compose override), for the education node"
compose stop education
id=$($DOCKER run -d --name "$PROJECT-healthcheck" --network "$NETWORK" --network-alias education \
    --init "${HARDENED[@]}" \
    -v "$WORK/federation/federation.toml:/fed/federation.toml:ro" \
    -v "$WORK/federation/linkage-schema.toml:/fed/linkage-schema.toml:ro" \
    -v "$WORK/federation/ca/ca.pem:/fed/ca/ca.pem:ro" \
    -v "$WORK/federation/certs:/fed/certs:ro" \
    -v "$WORK/federation/keys/education.key:/fed/keys/education.key:ro" \
    -v "$WORK/data/education:/fed/data:ro" \
    -v "${PROJECT}_education-state:/fed/state" \
    "$IMAGE" --log-json node serve --config /fed/federation.toml --party education)
wait_healthy "$id" 150
$DOCKER inspect "$id" --format \
    '{{.State.Health.Status}}: {{range .State.Health.Log}}exit {{.ExitCode}} {{.Output}}{{end}}'
$DOCKER rm -f -v "$id" >/dev/null
compose start education
wait_healthy "$(compose ps -q education)" 300
echo "without a node or coordinator key (the register, the operator), it passes:"
as - health --timeout 5

step "smoke run passed"

#!/usr/bin/env bash
# Build the component images: $IMAGE:$TAG (CPU, docker/Dockerfile) and $IMAGE:$TAG-cuda (Dockerfile.cuda).
#
#   tools/images.sh            (make images) build both, reusing every unchanged layer
#
# Environment (all optional):
#   IMAGE            image name, default localhost/headstart (the name the local pipeline run's components use)
#   TAG              default: the version in pyproject.toml
#   ENGINE           docker or podman; default: docker where a Docker daemon answers, else podman (installed
#                    with apt-get when missing, as `make data` installs the dataset package)
#   BASE_IMAGE       name:tag, default python:3.11-slim (a tag is required: the Dockerfiles take name and tag
#                    as two build args, so FROM always names a version). Where it is neither local nor pullable (no registry reachable),
#                    a Debian bookworm base with Python 3.11 is made here with mmdebstrap and imported as
#                    localhost/headstart-base:bookworm, and this script says so.
#   TORCH_INDEX_URL  default: each Dockerfile's own (PyTorch's CPU index; PyPI for CUDA). Where PyTorch's index is
#                    unreachable, "" (pip's configured indexes) for both: the CPU image then carries CUDA wheels.
#
# With podman, pip's own configuration on this machine (local indexes, a wheel folder, the CA bundle) is
# mounted read-only into the build, never copied into an image. tools/containers.conf holds the podman
# settings this kind of machine needs (runc, cgroupfs, ulimits); CONTAINERS_CONF points podman at it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IMAGE=${IMAGE:-localhost/headstart}
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
DEFAULT_BASE=python:3.11-slim
BASE_IMAGE=${BASE_IMAGE:-$DEFAULT_BASE}
LOCAL_BASE=localhost/headstart-base:bookworm
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/tools/containers.conf}
say() { printf 'images: %s\n' "$*"; }
case $BASE_IMAGE in
  *@*) say "error: BASE_IMAGE=$BASE_IMAGE: give a name:tag, not a digest (the Dockerfiles take BASE_IMAGE and BASE_TAG)" >&2; exit 1 ;;
esac
case ${BASE_IMAGE##*:} in
  */*|"$BASE_IMAGE") say "error: BASE_IMAGE=$BASE_IMAGE names no tag; give name:tag, e.g. python:3.11-slim" >&2; exit 1 ;;
  latest) say "error: BASE_IMAGE=$BASE_IMAGE: name a fixed version, not :latest" >&2; exit 1 ;;
esac

apt_install() {  # apt_install PKG...: install Debian packages that are missing
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null || { say "error: ${missing[*]} not installed and no apt-get" >&2; exit 1; }
  say "installing the Debian packages ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null &&
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}

if [ -z "${ENGINE:-}" ]; then
  if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if [ "$ENGINE" = podman ]; then apt_install podman runc; fi
say "engine: $ENGINE ($($ENGINE --version))"

has_image() { $ENGINE image inspect "$1" >/dev/null 2>&1; }

# ---- the base image -------------------------------------------------------------------------------------
if ! has_image "$BASE_IMAGE"; then
  if [ "$BASE_IMAGE" = "$DEFAULT_BASE" ] && ! timeout 60 $ENGINE pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    if ! has_image "$LOCAL_BASE"; then
      say "no registry reachable for $BASE_IMAGE: making $LOCAL_BASE here (mmdebstrap, Debian bookworm, Python 3.11)"
      apt_install mmdebstrap
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      mmdebstrap --quiet --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates,passwd bookworm "$tmp/rootfs.tar"
      $ENGINE import --change 'CMD ["python3"]' "$tmp/rootfs.tar" "$LOCAL_BASE" >/dev/null
    else
      say "no registry reachable for $BASE_IMAGE: using $LOCAL_BASE, made here earlier"
    fi
    BASE_IMAGE=$LOCAL_BASE
  elif ! has_image "$BASE_IMAGE"; then
    timeout 600 $ENGINE pull -q "$BASE_IMAGE" >/dev/null || { say "error: cannot pull BASE_IMAGE=$BASE_IMAGE" >&2; exit 1; }
  fi
fi
say "base image: $BASE_IMAGE"
base_name=${BASE_IMAGE%:*} base_tag=${BASE_IMAGE##*:}

# ---- where PyTorch comes from ---------------------------------------------------------------------------
torch_args=()
if [ -n "${TORCH_INDEX_URL+set}" ]; then
  torch_args=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
elif ! curl -fsS -m 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/ 2>/dev/null; then
  say "PyTorch's CPU index is not reachable: both images take torch from pip's configured indexes (CUDA wheels)"
  torch_args=(--build-arg "TORCH_INDEX_URL=")
fi

# ---- pip's configuration, mounted into the build (podman) -----------------------------------------------
mounts=()
if [ "$ENGINE" = podman ]; then
  conf_dir=$ROOT/.headstart/images
  mkdir -p "$conf_dir"
  py=$(command -v python3)
  {
    echo "[global]"
    "$py" -m pip config list 2>/dev/null | sed -n "s/^global\.\(index-url\|extra-index-url\|find-links\|cert\)='\(.*\)'$/\1 = \2/p"
    for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT; do
      [ -n "${!var:-}" ] && echo "$(echo "${var#PIP_}" | tr 'A-Z_' 'a-z-') = ${!var}"
    done
  } | awk -F' = ' '!seen[$1]++' > "$conf_dir/pip.conf"
  mounts+=(-v "$conf_dir/pip.conf:/etc/pip.conf:ro")
  # every local folder or file those settings name (file:// indexes, a wheel folder, the CA bundle)
  for path in $(sed -n 's/^[a-z-]* = //p' "$conf_dir/pip.conf"); do
    path=${path#file://}
    case $path in */simple|*/simple/) path=$(dirname "$path") ;; esac  # an index links to its ../files
    case $path in /*) [ -e "$path" ] && mounts+=(-v "$path:$path:ro") ;; esac
  done
fi

build() {  # build DOCKERFILE REF
  local start=$SECONDS
  say "building $2 from $1"
  $ENGINE build --quiet=false -f "$1" -t "$2" --build-arg "BASE_IMAGE=$base_name" \
    --build-arg "BASE_TAG=$base_tag" "${torch_args[@]}" \
    "${mounts[@]}" . > "$ROOT/.headstart/images/$(basename "$2" | tr ':/' '__').log" 2>&1 ||
    { tail -40 "$ROOT/.headstart/images/$(basename "$2" | tr ':/' '__').log" >&2; say "error: building $2 failed" >&2; exit 1; }
  say "built $2 in $((SECONDS - start)) s, $($ENGINE image inspect -f '{{.Size}}' "$2" | awk '{printf "%.2f GB", $1/1e9}')"
}
mkdir -p "$ROOT/.headstart/images"
build docker/Dockerfile "$IMAGE:$TAG"
build docker/Dockerfile.cuda "$IMAGE:$TAG-cuda"

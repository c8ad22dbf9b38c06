#!/usr/bin/env bash
# Provide a Docker-compatible container engine and the images the container tests use.
#
# Usage: eval "$(scripts/container-engine.sh)"
#
# When an engine already answers (DOCKER_HOST, the Docker socket or a Podman socket) it is
# used as is. Otherwise Debian's podman is installed and `podman system service` is started
# in the background on /run/podman/podman.sock, configured to work without systemd and under
# lowered resource limits: runc as runtime, the cgroupfs cgroup manager, netavark networking
# (its DNS gives containers their aliases) and default ulimits below the host's hard limits.
#
# The images trio-runner-test/busybox:latest and trio-runner-test/bookworm:latest are then
# built when missing, without any image registry: busybox from Debian's busybox-static, the
# Debian image (bash, git, nodejs) with debootstrap from the mirror apt already uses. Both are
# imported through the Engine API, so the same path serves Docker and Podman.
#
# Every step is idempotent. Standard output is only the `export DOCKER_HOST=...` line;
# progress goes to standard error.

set -euo pipefail

# Keep the caller's stdout for the export line alone.
exec 3>&1 1>&2

PODMAN_SOCKET=/run/podman/podman.sock
PODMAN_LOG=/var/log/trio-runner-podman.log
PODMAN_CONF=/etc/containers/containers.conf.d/50-trio-runner.conf
CACHE_DIR=/var/cache/trio-runner
BUSYBOX_IMAGE=trio-runner-test/busybox
BOOKWORM_IMAGE=trio-runner-test/bookworm
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENGINE_WAIT_SECONDS=60

log() { printf 'container-engine: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# api HOST METHOD PATH [curl args...]: one Engine API call; HOST is unix://... or tcp://...
api() {
    local host=$1 method=$2 path=$3
    shift 3
    case $host in
    unix://*) curl -sS --unix-socket "${host#unix://}" -X "$method" "$@" "http://engine$path" ;;
    tcp://*) curl -sS -X "$method" "$@" "http://${host#tcp://}$path" ;;
    *) die "unsupported DOCKER_HOST '$host' (expected unix:// or tcp://)" ;;
    esac
}

answers() {
    [ "$(api "$1" GET /_ping --max-time 2 2>/dev/null)" = OK ]
}

find_engine() {
    local candidate
    for candidate in ${DOCKER_HOST:+"$DOCKER_HOST"} unix:///var/run/docker.sock \
        "unix://$PODMAN_SOCKET" ${XDG_RUNTIME_DIR:+"unix://$XDG_RUNTIME_DIR/podman/podman.sock"}; do
        if answers "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_podman_config() {
    local nofile nproc
    # Podman's own defaults (over a million open files) exceed what many CI hosts allow.
    nofile=$(limit_below "$(ulimit -Hn)")
    nproc=$(limit_below "$(ulimit -Hu)")
    as_root mkdir -p "$(dirname "$PODMAN_CONF")"
    as_root tee "$PODMAN_CONF" >/dev/null <<EOF
# Written by trio-runner's scripts/container-engine.sh.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"
EOF
}

# 4096, or the hard limit when that is lower.
limit_below() {
    if [ "$1" = unlimited ] || [ "$1" -ge 4096 ]; then echo 4096; else echo "$1"; fi
}

start_podman() {
    apt_install podman runc netavark aardvark-dns iptables uidmap curl ca-certificates
    write_podman_config
    as_root mkdir -p "$(dirname "$PODMAN_SOCKET")"
    as_root rm -f "$PODMAN_SOCKET"
    log "starting podman system service on $PODMAN_SOCKET (log: $PODMAN_LOG)"
    # setsid + nohup detach the service from the caller's session, so it outlives this
    # script and the shell that evaluates its output.
    # fd 3 (the caller's stdout) is closed too, or `$(...)` around this script would wait
    # for the service to exit.
    as_root setsid nohup podman system service --time=0 "unix://$PODMAN_SOCKET" \
        </dev/null >>"$PODMAN_LOG" 2>&1 3>&- &
    local waited=0
    until answers "unix://$PODMAN_SOCKET"; do
        if [ "$waited" -ge "$ENGINE_WAIT_SECONDS" ]; then
            tail -n 20 "$PODMAN_LOG" || true
            die "podman did not answer on $PODMAN_SOCKET within ${ENGINE_WAIT_SECONDS}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

urlencode() {
    local text=$1 out='' char i
    for ((i = 0; i < ${#text}; i++)); do
        char=${text:i:1}
        case $char in
        [A-Za-z0-9._~/-]) out+=$char ;;
        *) out+=$(printf '%%%02X' "'$char") ;;
        esac
    done
    printf '%s' "$out"
}

has_image() {
    [ "$(api "$1" GET "/images/$2:latest/json" -o /dev/null -w '%{http_code}')" = 200 ]
}

# import_rootfs HOST TARBALL IMAGE CMD: create IMAGE:latest from a root filesystem tarball.
import_rootfs() {
    local host=$1 tarball=$2 image=$3 cmd=$4 response
    local query="fromSrc=-&repo=$image&tag=latest"
    query+="&changes=$(urlencode "ENV PATH=$IMAGE_PATH")"
    query+="&changes=$(urlencode "CMD [\"$cmd\"]")"
    # -T streams the tarball instead of loading it into memory.
    response=$(api "$host" POST "/images/create?$query" -T "$tarball" \
        -H 'Content-Type: application/x-tar' --fail-with-body) ||
        die "importing $image failed: $response"
    has_image "$host" "$image" || die "importing $image failed: $response"
    log "built $image:latest"
}

build_busybox() {
    local host=$1 root
    apt_install busybox-static
    root=$(mktemp -d)
    mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --numeric-owner -cf "$root.tar" .
    import_rootfs "$host" "$root.tar" "$BUSYBOX_IMAGE" sh
    rm -rf "$root" "$root.tar"
}

# The mirror apt is configured with for this release's main component.
debian_mirror() {
    local codename
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' |
        awk -v suite="$codename" '$2 == suite && $3 == "main" { print $1; exit }'
}

bookworm_rootfs() {
    local tarball=$CACHE_DIR/bookworm-rootfs.tar mirror root
    if [ -s "$tarball" ]; then
        echo "$tarball"
        return 0
    fi
    apt_install debootstrap
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || die "no Debian mirror for this release found in apt's sources"
    as_root mkdir -p "$CACHE_DIR"
    root=$(as_root mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    log "debootstrap bookworm from $mirror (a few minutes)"
    as_root debootstrap --variant=minbase --include=bash,git,nodejs,ca-certificates \
        bookworm "$root" "$mirror" >&2
    as_root rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    as_root tar -C "$root" --numeric-owner -cf "$tarball.partial" .
    as_root mv "$tarball.partial" "$tarball"
    as_root rm -rf "$root"
    echo "$tarball"
}

main() {
    local host
    if ! host=$(find_engine); then
        start_podman
        host=unix://$PODMAN_SOCKET
    fi
    log "engine at $host"
    if has_image "$host" "$BUSYBOX_IMAGE"; then
        log "$BUSYBOX_IMAGE:latest present"
    else
        build_busybox "$host"
    fi
    if has_image "$host" "$BOOKWORM_IMAGE"; then
        log "$BOOKWORM_IMAGE:latest present"
    else
        import_rootfs "$host" "$(bookworm_rootfs)" "$BOOKWORM_IMAGE" bash
    fi
    printf 'export DOCKER_HOST=%s\n' "$host" >&3
}

main "$@"

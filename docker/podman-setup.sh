#!/bin/bash
# Make rootful podman work on this machine and print where its settings went:
#   eval "$(docker/podman-setup.sh OUTDIR)"   -> exports CONTAINERS_CONF=OUTDIR/containers.conf
# 1. installs the Debian packages (podman, podman-compose, mmdebstrap, runc, netavark, aardvark-dns)
# 2. builds the local base image if missing (docker/base/build-base.sh, cached)
# 3. finds what this machine needs, by trying, and writes it to OUTDIR/containers.conf:
#    - cgroup_manager cgroupfs and a file events log when there is no systemd (containers, CI);
#    - runc when crun refuses the cgroup layout (crun does not run on hybrid cgroup v1 + v2);
#    - ulimits no higher than this process may set (podman's defaults, nofile 1048576, fail
#      with "setrlimit: operation not permitted" where CAP_SYS_RESOURCE is missing);
#    then checks that containers on a private network find each other by name.
# Exit status 1 (and one line why) when containers cannot run here.
# Messages go to stderr; stdout carries only the export line.
set -eu
OUT=${1:?usage: podman-setup.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
say() { echo "podman-setup: $*" >&2; }

need=""
for p in podman:podman podman-compose:podman-compose mmdebstrap:mmdebstrap runc:runc \
         /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns; do
  cmd=${p%%:*}; pkg=${p#*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ] || need="$need $pkg"
done
if [ -n "$need" ]; then
  say "installing Debian packages:$need"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >&2
fi

mkdir -p "$OUT"
CONF=$OUT/containers.conf
: > "$CONF"
export CONTAINERS_CONF=$CONF
"$HERE/base/build-base.sh" >&2
BASE=localhost/atemu-base:bookworm

write_conf() {   # runtime, nofile, nproc (empty: podman's defaults)
  {
    echo "# written by docker/podman-setup.sh for $(hostname) ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo "[containers]"
    if [ -n "$2" ]; then echo "default_ulimits = [\"nofile=$2:$2\", \"nproc=$3:$3\"]"; fi
    echo "[engine]"
    if [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then printf 'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n'; fi
    if [ -n "$1" ]; then echo "runtime = \"$1\""; fi
  } > "$CONF"
}
try() { podman run --rm "$BASE" true 2>&1; }     # default (bridge) network: what the bench uses

hn=$(ulimit -Hn); hu=$(ulimit -Hu)
[ "$hn" = unlimited ] && hn=1048576
[ "$hu" = unlimited ] && hu=4194304
ok=""
for rt in "" runc; do
  write_conf "$rt" "" ""
  err=$(try) && { ok=1; break; }
  # podman lowers its own nproc limit on some machines: try the hard limits, then smaller ones
  for np in "$hu" 32768 4096; do
    [ "$np" -le "$hu" ] || continue
    write_conf "$rt" "$hn" "$np"
    err=$(try) && { ok=1; break 2; }
  done
done
if [ -z "$ok" ]; then
  say "containers do not start on this machine: $err"
  exit 1
fi
# the bench's services find each other by name: a private network with DNS (netavark + aardvark-dns)
probe=atemu-probe-$$
podman network create "$probe" >/dev/null 2>&1
err=$(podman run --rm --network "$probe" --name "$probe" "$BASE" \
        python3 -c "import socket; socket.gethostbyname('$probe')" 2>&1) || ok=""
podman network rm -f "$probe" >/dev/null 2>&1
if [ -z "$ok" ]; then
  say "containers run, but not on a private network with names (netavark/aardvark-dns): $err"
  exit 1
fi
say "containers run with $(grep -v '^#' "$CONF" | grep '=' | tr '\n' ' ')"
echo "export CONTAINERS_CONF=$CONF"

#!/bin/sh
# Build the local base image (Debian bookworm + python3, venv, mosquitto, openssl) from Debian
# packages alone, for machines that reach a Debian mirror but no container registry:
#   mmdebstrap -> root file system tarball -> podman import -> localhost/atemu-base:bookworm
# The tarball is cached ($ATEMU_CACHE, default /var/cache/atemu) and the image is kept, so later
# runs take a second. --force builds both again (after a Debian point release, say).
#   docker/base/build-base.sh [--force] [IMAGE]
# Environment: DEBIAN_MIRROR (default: this machine's apt mirror, else http://deb.debian.org/debian),
#              ATEMU_CACHE, PODMAN (default podman).
set -eu
FORCE=0
[ "${1:-}" = "--force" ] && { FORCE=1; shift; }
IMAGE=${1:-localhost/atemu-base:bookworm}
SUITE=bookworm
PACKAGES=python3,python3-venv,mosquitto,openssl,ca-certificates
CACHE=${ATEMU_CACHE:-/var/cache/atemu}
TAR=$CACHE/atemu-base-$SUITE.tar
PODMAN=${PODMAN:-podman}

# bump when the recipe changes: an image from an older recipe is imported again
RECIPE=2
if [ "$FORCE" = 0 ] && [ "$($PODMAN image inspect --format '{{index .Config.Labels "atemu.base.recipe"}}' "$IMAGE" \
                            2>/dev/null)" = "$RECIPE" ]; then
  echo "build-base: $IMAGE is there (--force to rebuild)"
  exit 0
fi
if [ -z "${DEBIAN_MIRROR:-}" ]; then
  # the mirror this machine's apt uses (deb822 or one-line sources), so a local mirror keeps working
  DEBIAN_MIRROR=$(sed -n 's/^URIs: *\([^ ]*debian\)\/* *$/\1/p; s/^deb  *\(\[[^]]*\] *\)\{0,1\}\(http[^ ]*debian\)\/* .*/\2/p' \
                    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -n 1)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
mkdir -p "$CACHE"
if [ "$FORCE" = 1 ] || [ ! -s "$TAR" ]; then
  command -v mmdebstrap >/dev/null || { echo "build-base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 2; }
  echo "build-base: mmdebstrap $SUITE from $DEBIAN_MIRROR (about a minute)"
  mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --customize-hook='chroot "$1" sh -c "apt-get clean; rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/*"' \
    "$SUITE" "$CACHE/partial-$SUITE.tar" "$DEBIAN_MIRROR"
  mv "$CACHE/partial-$SUITE.tar" "$TAR"
fi
$PODMAN import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' --change "LABEL atemu.base.recipe=$RECIPE" \
  -q --message "atemu base: Debian $SUITE minbase + $PACKAGES (mmdebstrap)" "$TAR" "$IMAGE" >/dev/null
echo "build-base: $IMAGE imported from $TAR"

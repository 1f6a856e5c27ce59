#!/bin/bash
# make test-docker: the compose bench and the Kubernetes manifests, run for real with podman.
#   1. compose: bring the bench up, wait for the host container's exit code, check the broker
#      received the host's messages (broker log and the witness's copy), tear it down
#   2. Kubernetes: play docker/k8s/atemu-fleet.yaml with 2 replicas (podman kube play), check that
#      every module of every pod answers AT through the pod's network name; play broker.yaml and
#      check mosquitto listens; tear it down
# Needs: CONTAINERS_CONF from podman-setup.sh and the image localhost/atemu:bench (make docker-images).
# Logs: $OUT (default build/docker-test). PARTS="compose kube" (default) chooses what runs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/docker-test}
RUN=${RUN:-$$}                       # names of this run's containers, networks and pods: no clash with another run
PROJECT=atemu-bench-test-$RUN
NET=atemu-k8s-test-$RUN
SUFFIX=-t$RUN
IMAGE=${ATEMU_IMAGE:-localhost/atemu:bench}
TOKEN=test-$RANDOM$RANDOM
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
fail=0
say() { echo "test-docker: $*"; }
check() {  # description, command...
  local what=$1; shift
  if "$@"; then say "ok   $what"; else say "FAIL $what"; fail=1; fi
}
compose() { podman-compose -p "$PROJECT" -f docker/compose.yaml "$@"; }

PARTS=" ${PARTS:-compose kube} "
KUBE_YAML=$OUT/atemu-fleet.podman.yaml
BROKER_YAML=$OUT/broker.podman.yaml
rm -f "$KUBE_YAML" "$BROKER_YAML"
cleanup() {     # also on Ctrl+C or a timeout: leave nothing of this run behind
  compose down -v >/dev/null 2>&1
  podman network rm "${PROJECT}_default" >/dev/null 2>&1      # podman-compose 1.0.3 leaves it
  for y in "$KUBE_YAML" "$BROKER_YAML"; do
    if [ -f "$y" ]; then podman kube down "$y" >/dev/null 2>&1; fi
  done
  podman volume rm "atemu-fleet$SUFFIX" >/dev/null 2>&1        # podman 4.3 keeps the ConfigMap's volume
  podman network rm "$NET" >/dev/null 2>&1
}
trap cleanup EXIT
trap "exit 143" TERM INT     # so the EXIT trap cleans up after a timeout or Ctrl+C too

# ---- 1. the compose bench ------------------------------------------------------------------------
if [[ $PARTS == *" compose "* ]]; then
compose down -v >/dev/null 2>&1
say "compose bench: up --exit-code-from host (log: $OUT/compose.log)"
ATEMU_CONTROL_TOKEN=$TOKEN timeout 600 podman-compose -p "$PROJECT" -f docker/compose.yaml \
  up --no-build --exit-code-from host > "$OUT/compose.log" 2>&1
rc=$?
for s in broker peers witness atemu host; do podman logs "${PROJECT}_${s}_1" > "$OUT/$s.log" 2>&1; done
check "host container exited 0 (got $rc)" test "$rc" = 0
check "host: all steps passed" grep -qx "host: all steps passed" "$OUT/host.log"
check "broker received the host's publish over TLS" \
  grep -q "Received PUBLISH from bench-host .*'bench/hello'" "$OUT/broker.log"
check "witness got 'bench/hello hello from the bench host'" \
  grep -qx "witness: bench/hello hello from the bench host" "$OUT/witness.log"
check "witness got the Eseye module's message on tele/thing_0001" \
  grep -qx "witness: tele/thing_0001 hello from the eseye module" "$OUT/witness.log"
for s in broker peers atemu; do     # the health checks compose declares, run by hand (no systemd timers here)
  check "health check of $s passes" podman healthcheck run "${PROJECT}_${s}_1"
done
cleanup
check "compose bench torn down" test -z "$(podman ps -aq --filter label=io.podman.compose.project=$PROJECT)"
fi

# ---- 2. the Kubernetes manifests -----------------------------------------------------------------
if [[ $PARTS == *" kube "* ]]; then
say "kubernetes: podman kube play docker/k8s/atemu-fleet.yaml, 2 replicas (log: $OUT/kube.log)"
$PY docker/k8s/for-podman.py docker/k8s/atemu-fleet.yaml --replicas 2 --suffix="$SUFFIX" > "$KUBE_YAML" \
  || { say "FAIL cannot convert the manifest"; exit 1; }
sed -i "s/change-me-bench-token/$TOKEN/" "$KUBE_YAML"
podman network exists "$NET" || podman network create "$NET" >/dev/null
podman kube play --network "$NET" "$KUBE_YAML" > "$OUT/kube.log" 2>&1
check "kube play started the pods" test $? = 0
check "fleetcheck: every module of every pod answers AT" \
  podman run --rm --network "$NET" -e ATEMU_CONTROL_TOKEN="$TOKEN" --entrypoint python3 "$IMAGE" \
    services.py fleetcheck "http://atemu$SUFFIX-pod-0:8000" "http://atemu$SUFFIX-pod-1:8000"
for p in "atemu$SUFFIX-pod-0" "atemu$SUFFIX-pod-1"; do podman logs "$p-atemu" > "$OUT/$p.log" 2>&1; done
# the broker manifest: its pod generates a PKI (no Secret under podman) and listens with TLS
$PY docker/k8s/for-podman.py docker/k8s/broker.yaml --suffix="$SUFFIX" > "$BROKER_YAML"
podman kube play --network "$NET" "$BROKER_YAML" >> "$OUT/kube.log" 2>&1
check "broker manifest: mosquitto listens on 8883" \
  podman run --rm --network "$NET" --entrypoint bash "$IMAGE" -c \
    "for i in \$(seq 60); do python3 services.py health tcp broker$SUFFIX-pod-0 8883 && exit 0; sleep 1; done; exit 1"
podman logs "broker$SUFFIX-pod-0-mosquitto" > "$OUT/broker-pod.log" 2>&1
cleanup
check "kube pods torn down" test -z "$(podman pod ps -q --filter name=atemu$SUFFIX-pod)"
fi

if [ "$fail" = 0 ]; then say "PASSED"; else say "FAILED (logs in $OUT)"; fi
exit $fail

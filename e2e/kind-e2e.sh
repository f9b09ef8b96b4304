#!/usr/bin/env bash
# `make e2e`: the live suite on a fresh kind cluster, against the operator deployed as users
# deploy it (config/default, built image loaded into kind). Needs Docker, kind and kubectl.
# Deletes the cluster at the end unless KEEP_CLUSTER=1; on failure prints what to debug with.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${KIND:-kind}
KIND_VERSION=v0.29.0            # pinned; its default node image is the one in e2e/kind.yaml
CLUSTER=${KIND_CLUSTER:-redis-operator-e2e}
IMG=${IMG:-redis-operator:0.1.0}
export KUBECONFIG=$PWD/target/kind-e2e.kubeconfig

step() { echo "== $*" >&2; }

for tool in docker "$KIND" kubectl cargo; do
  command -v "$tool" >/dev/null || { echo "make e2e needs $tool on PATH" >&2; exit 1; }
done
if ! "$KIND" version | grep -q "$KIND_VERSION"; then
  echo "make e2e is pinned to kind $KIND_VERSION (go install sigs.k8s.io/kind@$KIND_VERSION); found: $("$KIND" version)" >&2
  exit 1
fi

diagnose() {
  step "operator logs"
  timeout 30 kubectl -n redis-operator-system logs -l app.kubernetes.io/name=redis-operator --all-containers --tail=200 || true
  for ns in $(kubectl get ns -l e2e.redis-operator/test -o name 2>/dev/null | cut -d/ -f2); do
    step "namespace $ns"
    timeout 30 kubectl -n "$ns" get redisclusters,statefulsets,services,pods,events -o wide || true
    timeout 30 kubectl -n "$ns" describe redisclusters,statefulsets || true
  done
}
cleanup() {
  local rc=$?
  [[ $rc -eq 0 ]] || diagnose
  if [[ ${KEEP_CLUSTER:-0} == 1 ]]; then
    step "keeping cluster $CLUSTER (KUBECONFIG=$KUBECONFIG)"
  else
    step "deleting cluster $CLUSTER"
    timeout 120 "$KIND" delete cluster --name "$CLUSTER" || true
  fi
  exit $rc
}
trap cleanup EXIT

mkdir -p target
step "creating kind cluster $CLUSTER"
"$KIND" get clusters | grep -qx "$CLUSTER" \
  || timeout 300 "$KIND" create cluster --name "$CLUSTER" --config e2e/kind.yaml --kubeconfig "$KUBECONFIG" --wait 180s
"$KIND" get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

step "building and loading $IMG"
timeout 1800 docker build -t "$IMG" .
timeout 300 "$KIND" load docker-image "$IMG" --name "$CLUSTER"

step "deploying CRD and operator"
timeout 120 make deploy IMG="$IMG"
timeout 180 kubectl -n redis-operator-system rollout status deployment/redis-operator --timeout=170s

step "running the suite against the deployed operator"
timeout 600 cargo build -p redis-operator   # the leader-election test starts its own processes
E2E_MODE=in-cluster timeout 1800 cargo test -p e2e -- --ignored --test-threads=4

#!/bin/sh
# The end-to-end scenarios on a kind cluster without GPUs: the simulated
# overlay, the real kube-scheduler and kubelet. Needs kind, kubectl, docker.
set -eu
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-gpupack-e2e}

kind create cluster --name "$CLUSTER"
docker build -t gpupack/device-plugin:e2e -f daemonset/docker/device-plugin.Dockerfile .
docker build -t gpupack/scheduler-ext:e2e -f daemonset/docker/scheduler-ext.Dockerfile .
kind load docker-image --name "$CLUSTER" gpupack/device-plugin:e2e gpupack/scheduler-ext:e2e

# The simulated overlay with the images just built.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/kustomization.yaml" <<YAML
resources:
- $(pwd)/daemonset/overlays/simulated
images:
- name: ghcr.io/gpupack/gpupack-device-plugin
  newName: gpupack/device-plugin
  newTag: e2e
- name: ghcr.io/gpupack/gpupack-scheduler-ext
  newName: gpupack/scheduler-ext
  newTag: e2e
YAML
kubectl apply -k "$WORK"
kubectl label node --all gpupack.io/gpu-node=true --overwrite
kubectl -n gpupack-system rollout status daemonset/gpupack-device-plugin --timeout=180s
kubectl -n gpupack-system rollout status deployment/gpupack-scheduler --timeout=180s

E2E_TARGET=cluster cargo test -p e2e --test scenarios cluster_target -- --nocapture

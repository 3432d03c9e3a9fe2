#!/usr/bin/env bash
# Renders the kustomize directories under daemonset/ from the Helm chart, so
# that `kubectl apply -k` installs exactly what `helm install` does:
#   base/gpupack.yaml               <- the chart's defaults (ci/default-values.yaml)
#   overlays/simulated/gpupack.yaml <- ci/simulated-values.yaml
#   overlays/metrics/gpupack.yaml   <- ci/metrics-values.yaml
# Run it after changing the chart; `cargo test -p e2e --test manifests`
# fails while these files differ from what it writes.
# Usage: render-kustomize.sh [OUTPUT_ROOT]   (default: daemonset/)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CHART="$HERE/gpupack"
OUT="${1:-$HERE/..}"
HELM="$("$HERE/install-helm.sh")"

render() {
    local dir="$1" values="$2"
    mkdir -p "$OUT/$dir"
    {
        echo "# Rendered from daemonset/helm/gpupack with ci/$values by"
        echo "# daemonset/helm/render-kustomize.sh; do not edit."
        "$HELM" template gpupack "$CHART" --namespace gpupack-system --values "$CHART/ci/$values"
    } >"$OUT/$dir/gpupack.yaml.partial"
    mv "$OUT/$dir/gpupack.yaml.partial" "$OUT/$dir/gpupack.yaml"
}

render base default-values.yaml
render overlays/simulated simulated-values.yaml
render overlays/metrics metrics-values.yaml

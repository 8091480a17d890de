#!/usr/bin/env bash
# Fetches an official Node.js build of the given major version from the npm registry (the
# node-<platform>-<arch> packages carry the release binaries) into scripts/.node/, and prints its bin
# directory, for running the tests, the compatibility matrix or the bench on another Node than the
# machine's (CI runs the Jest suite on 22 and 24 this way):
#
#   PATH="$(bash scripts/node.sh 24):$PATH" npx jest --runInBand
#   PATH="$(bash scripts/node.sh 24):$PATH" npm run compat
#   PATH="$(bash scripts/node.sh 24):$PATH" npm run bench
#
# Only `node` is fetched: npm and npx on the PATH run on it. The project has no native modules, so
# the same node_modules serve every Node version.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
major=${1:?usage: bash scripts/node.sh MAJOR   (e.g. 24)}
case "$(uname -s)" in Linux) platform=linux ;; Darwin) platform=darwin ;; *) echo "unsupported platform $(uname -s)" >&2; exit 1 ;; esac
case "$(uname -m)" in x86_64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) echo "unsupported architecture $(uname -m)" >&2; exit 1 ;; esac
package="node-$platform-$arch"
# The newest release of that major: npm lists the versions in publication order, not by version.
version=$(npm view "$package@$major" version --json | node -e '
  const parts = (v) => v.split(".").map(Number);
  const newer = (a, b) => { const [x, y] = [parts(a), parts(b)]; return x[0] - y[0] || x[1] - y[1] || x[2] - y[2]; };
  console.log([].concat(JSON.parse(require("fs").readFileSync(0, "utf8"))).sort(newer).pop());')
dir=".node/$version"
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$dir"
  tarball=$(cd "$dir" && npm pack --silent "$package@$version")
  tar -xzf "$dir/$tarball" -C "$dir" --strip-components=1
  rm -f "$dir/$tarball"
fi
"$dir/bin/node" --version >&2
echo "$(pwd)/$dir/bin"

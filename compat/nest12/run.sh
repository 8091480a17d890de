#!/usr/bin/env bash
# Proves the published build on NestJS 12 (ESM-only packages), outside Jest: packs the library,
# installs it beside NestJS 12 in a scratch directory, and runs smoke.mjs against PostgreSQL.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$root" && npm run build >/dev/null && npm pack --silent --pack-destination "$work" >/dev/null)
cd "$work"
npm init -y >/dev/null
npm install --silent --no-audit --no-fund \
  @nestjs/common@12.5.1 @nestjs/core@12.5.1 @nestjs/platform-express@12.5.1 @nestjs/typeorm@12.0.2 \
  typeorm@1.1.1 pg@8.16.3 reflect-metadata@0.2.2 rxjs@7.8.2 ./nestjs-request-transaction-*.tgz
cp "$here/smoke.mjs" .
node smoke.mjs

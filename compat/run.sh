#!/usr/bin/env bash
# The compatibility matrix: proves the built package in fresh apps, outside this repository and its
# Jest setup. One variant per file in compat/variants/ (the exact packages it installs). For each: a
# scratch directory, the packed library and the variant's packages installed from npm (the default
# cache), and the smoke app (compat/smoke/checks.cjs) run as an ESM app when the variant's NestJS is
# ESM-only, as a CommonJS app otherwise, against PostgreSQL at DATABASE_URL.
#
#   bash compat/run.sh                  # every variant, one after the other (npm run compat)
#   bash compat/run.sh nest10 nest12    # some of them
#   COMPAT_PACKAGE=path/to/nestjs-request-transaction-0.1.0.tgz bash compat/run.sh   # a build packed elsewhere
#
# Prints one PASS/FAIL line per check and a table per variant; exits non-zero if any check failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

variants=("$@")
if [ ${#variants[@]} -eq 0 ]; then
  for file in "$here"/variants/*; do variants+=("$(basename "$file")"); done
fi
for variant in "${variants[@]}"; do
  if [ ! -f "$here/variants/$variant" ]; then
    echo "Unknown variant '$variant': the variants are the files in compat/variants/ ($(echo $(ls "$here/variants")))." >&2
    exit 2
  fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-request-transaction-compat.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

if [ -n "${COMPAT_PACKAGE:-}" ]; then
  tarball="$(cd "$(dirname "$COMPAT_PACKAGE")" && pwd)/$(basename "$COMPAT_PACKAGE")"
else
  (cd "$root" && npm run build >/dev/null && npm pack --silent --pack-destination "$work" >/dev/null)
  tarball=$(ls "$work"/nestjs-request-transaction-*.tgz)
fi
echo "Package: $tarball; Node $(node --version), npm $(npm --version); PostgreSQL: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

summary=()
failed=0
for variant in "${variants[@]}"; do
  printf '\n==> %s\n' "$variant"
  dir="$work/$variant"
  mkdir -p "$dir"
  mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$here/variants/$variant")
  variant_started=$SECONDS
  # --prefer-offline: every version is exact, so the cached metadata and tarballs are used as they are.
  if ! (cd "$dir" && npm init -y >/dev/null &&
    npm install --no-audit --no-fund --prefer-offline --loglevel=error "${packages[@]}" "$tarball" >/dev/null); then
    summary+=("$(printf '%-18s %-28s %6s %6s' "$variant" 'FAIL (npm install failed)' "$((SECONDS - variant_started))s" '-')")
    failed=1
    continue
  fi
  installed=$((SECONDS - variant_started))
  cp "$here"/smoke/* "$dir"/
  entry=smoke.cjs
  if [ "$(cd "$dir" && node -p "require('./node_modules/@nestjs/core/package.json').type")" = module ]; then entry=smoke.mjs; fi
  run_started=$SECONDS
  set +e
  (cd "$dir" && node "$entry" 2>&1) | tee "$dir/smoke.log"
  status=${PIPESTATUS[0]}
  set -e
  result=$(sed -n 's/^SUMMARY \([0-9]*\/[0-9]*\) checks passed$/\1/p' "$dir/smoke.log")
  if [ "$status" -eq 0 ]; then verdict="PASS ${result}"; else verdict="FAIL ${result:-(no result)}"; failed=1; fi
  summary+=("$(printf '%-18s %-28s %6s %6s' "$variant" "$verdict ($entry)" "${installed}s" "$((SECONDS - run_started))s")")
done

printf '\n%-18s %-28s %6s %6s\n' variant 'checks passed' install run
printf '%s\n' "${summary[@]}"
echo "Total: $((SECONDS - started)) s on Node $(node --version)"
exit "$failed"

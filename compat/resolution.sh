#!/usr/bin/env bash
# Every entry point of the packed package resolves as users get it: 'nestjs-request-transaction',
# '/testing' and '/prometheus', type-checked by a consumer project (compat/resolution/consumer.ts)
# under each TypeScript moduleResolution (node10, node16 and nodenext as CommonJS and as ESM,
# bundler), then loaded at run time by require() from a CommonJS app and by import from an ESM app;
# and, with node --enable-source-maps, the package's own stack frames name files the package ships.
# The package and its peers (the versions of this repository's devDependencies) come from npm pack
# and the npm cache; no database is needed.
#
#   bash compat/resolution.sh        # npm run compat:resolution
#   COMPAT_PACKAGE=path/to/nestjs-request-transaction-0.1.0.tgz bash compat/resolution.sh
#
# Prints one PASS/FAIL line per check; exits non-zero if any failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/nestjs-request-transaction-resolution.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ -n "${COMPAT_PACKAGE:-}" ]; then
  tarball="$(cd "$(dirname "$COMPAT_PACKAGE")" && pwd)/$(basename "$COMPAT_PACKAGE")"
else
  (cd "$root" && npm run build >/dev/null && npm pack --silent --pack-destination "$work" >/dev/null)
  tarball=$(ls "$work"/nestjs-request-transaction-*.tgz)
fi

# The peers and the compiler at the versions this repository develops with.
mapfile -t packages < <(cd "$root" && node -e '
  const { devDependencies: dev } = require("./package.json");
  for (const name of ["@nestjs/common", "@nestjs/core", "@nestjs/typeorm", "typeorm", "prom-client",
    "reflect-metadata", "rxjs", "typescript", "@types/node"]) console.log(`${name}@${dev[name]}`);')
app="$work/app"
mkdir -p "$app"
(cd "$app" && npm init -y >/dev/null &&
  npm install --no-audit --no-fund --prefer-offline --loglevel=error "${packages[@]}" "$tarball" >/dev/null)
echo "Package: $(basename "$tarball"); TypeScript $("$app/node_modules/.bin/tsc" --version | cut -d' ' -f2); Node $(node --version)"

failed=0
check() {
  local name=$1
  shift
  if output=$("$@" 2>&1); then
    echo "PASS $name"
  else
    echo "FAIL $name"
    printf '%s\n' "$output" | sed 's/^/    | /'
    failed=1
  fi
}

# name, package.json type, module, moduleResolution
variants=(
  "node10-commonjs commonjs commonjs node10"
  "node16-commonjs commonjs node16 node16"
  "node16-esm module node16 node16"
  "nodenext-commonjs commonjs nodenext nodenext"
  "nodenext-esm module nodenext nodenext"
  "bundler-esm module esnext bundler"
)
for variant in "${variants[@]}"; do
  read -r name type module resolution <<<"$variant"
  dir="$app/$name"
  mkdir -p "$dir"
  cp "$here/resolution/consumer.ts" "$dir/"
  printf '{ "name": "%s", "private": true, "type": "%s" }\n' "$name" "$type" >"$dir/package.json"
  cat >"$dir/tsconfig.json" <<JSON
{
  "compilerOptions": {
    "module": "$module",
    "moduleResolution": "$resolution",
    "target": "ES2022",
    "strict": true,
    "noEmit": true,
    "skipLibCheck": false,
    "types": ["node"]
  },
  "files": ["consumer.ts"]
}
JSON
  check "tsc: moduleResolution $resolution, module $module, \"type\": \"$type\"" "$app/node_modules/.bin/tsc" -p "$dir/tsconfig.json"
done

cp "$here/resolution/runtime.cjs" "$here/resolution/runtime.mjs" "$here/resolution/stack.cjs" "$here/resolution/expected.json" "$app/"
check "require() of every entry point from a CommonJS app" node "$app/runtime.cjs"
check "import of every entry point from an ESM app" node "$app/runtime.mjs"
check "source maps: the package's frames map to TypeScript files it ships" node --enable-source-maps "$app/stack.cjs"
exit "$failed"

#!/usr/bin/env bash
# Instructions per request, counted by valgrind (callgrind): the same count whatever else the machine
# is doing, where req/s on a shared machine moves by more than the differences it measures.
#
#   npm run build && npx tsc -p bench/tsconfig.json && bash bench/instructions.sh
#   BENCH_ADAPTERS=fastify BENCH_VARIANTS=handwritten,module-throw bash bench/instructions.sh
#   BENCH_IC_ROUTE=ping bash bench/instructions.sh        # GET /ping, the route without a database
#   BENCH_IC_PROFILE=/tmp/ic bash bench/instructions.sh   # also: where the instructions went, by function
#   BENCH_IC_THREADS=main bash bench/instructions.sh      # the main thread's alone (see below)
#
# Each variant's server (bench/dist/server.js) runs under callgrind with counting off; it serves
# BENCH_IC_WARMUP transfers (default 3000: the JIT must be done compiling, or its work is counted), then as
# many requests of the counted route when it is another; then counting is switched on for
# BENCH_IC_REQUESTS more (default 3000: with fewer, a garbage collection more or less moves the count by
# several per cent), 10 at a time. Only the server's user-space instructions are counted (not the
# kernel's, not PostgreSQL's). About 4 minutes per variant. The servers run on the `node` of the PATH.
# With BENCH_IC_THREADS=main, only the main thread's instructions count: the one that runs JavaScript.
# V8's helper threads (the optimizing compiler, concurrent marking, parallel scavenging) then drop out,
# and with them the largest part of what moves a count from one run to the next (whether a major
# collection falls inside the counted requests); which functions run optimized still moves it (see
# bench/README.md). What they leave out is real work: the default (every thread) is what a server pays.
# Needs valgrind (Debian package valgrind) and seeded bench tables (run `npm run bench -- --quick` once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

variants=${BENCH_VARIANTS:-handwritten,hand-als-handler,module-throw,typeorm-transactional}
adapters=${BENCH_ADAPTERS:-express,fastify}
warmup=${BENCH_IC_WARMUP:-3000}
requests=${BENCH_IC_REQUESTS:-3000}
route=${BENCH_IC_ROUTE:-transfer}
# A directory: keep each server's profile there, with V8's perf map naming its JIT code, and print
# where its instructions went (bench/dist/symbolize.js). The servers then also write the map and
# give interpreted functions frames of their own, which costs a few per cent more instructions.
profile=${BENCH_IC_PROFILE:-}
threads=${BENCH_IC_THREADS:-all}
case "$threads" in
  all) separate=no ;;
  main) separate=yes ;;
  *) echo "BENCH_IC_THREADS must be all or main, got $threads" >&2; exit 1 ;;
esac
# The bearer token the realistic app's auth guard checks (bench/workloads.ts); the other variants ignore it.
auth=(-H 'authorization=Bearer bench')
transfer=(-m POST -H content-type=application/json "${auth[@]}" -b '{"from":1,"to":2,"amount":1}')
case "$route" in
  transfer) request=("${transfer[@]}") ;;
  ping) request=(-m GET "${auth[@]}") ;;
  *) echo "BENCH_IC_ROUTE must be transfer or ping, got $route" >&2; exit 1 ;;
esac
autocannon=node_modules/.bin/autocannon
command -v callgrind_control >/dev/null || { echo "valgrind is not installed: apt-get install -y valgrind" >&2; exit 1; }
[ -z "$profile" ] || mkdir -p "$profile"
[ -f bench/dist/server.js ] || { echo "bench/dist/server.js is missing: npx tsc -p bench/tsconfig.json" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Prints the instructions per request of one variant on one adapter.
count() {
  local variant=$1 adapter=$2 port=$((20000 + RANDOM % 20000))
  local node_options=${NODE_OPTIONS:-}
  [ -z "$profile" ] || node_options="$node_options --perf-basic-prof --interpreted-frames-native-stack"
  NODE_OPTIONS=$node_options valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file --separate-threads="$separate" \
    --callgrind-out-file="$work/cg.%p" node bench/dist/server.js "$variant" "$adapter" "$port" >"$work/server.log" 2>&1 &
  local pid=$! i
  for ((i = 0; i < 600; i++)); do
    grep -qs READY "$work/server.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  if ! grep -q READY "$work/server.log"; then
    echo "$variant/$adapter did not start:" >&2
    cat "$work/server.log" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  local load=(-c 10 "${request[@]}" "http://127.0.0.1:$port/$route")
  # Every server first serves transfers, as an application serves its database routes: the libraries
  # that propagate a context only once a transaction ran (the peers) then do so, as they would in service.
  "$autocannon" -a "$warmup" -c 10 "${transfer[@]}" "http://127.0.0.1:$port/transfer" >/dev/null 2>&1
  [ "$route" = transfer ] || "$autocannon" -a "$warmup" "${load[@]}" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null
  "$autocannon" -a "$requests" "${load[@]}" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null
  callgrind_control -i off "$pid" >/dev/null
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  local total
  # With separate threads, each thread's counts are in files ending -NN; the main thread's end in -01.
  local files=("$work"/cg.*)
  [ "$threads" = all ] || files=("$work"/cg.*-01)
  total=$(grep -h '^summary:\|^totals:' "${files[@]}" | awk '{ s += $2 } END { print s }')
  if [ "$threads" = main ]; then
    local every
    every=$(grep -h '^summary:\|^totals:' "$work"/cg.* | awk '{ s += $2 } END { print s }')
    echo "  $variant/$adapter, every thread: $((every / requests)) per request" >&2
  fi
  if [ -n "$profile" ]; then
    local name="$profile/$adapter-$variant"
    # The counted part is the dump callgrind_control asked for (the largest file; of the main thread's
    # with BENCH_IC_THREADS=main).
    cp "$(ls -S "${files[@]}" | head -n 1)" "$name.callgrind"
    mv "/tmp/perf-$pid.map" "$name.perf.map"
    # The perf map flags also make V8 write its log to the working directory.
    rm -f isolate-0x*-"$pid"-v8.log
    node bench/dist/symbolize.js "$name.callgrind" "$name.perf.map" "$requests" >"$name.md"
  fi
  rm -f "$work"/cg.*
  echo $((total / requests))
}

what="instructions per request of /$route"
[ "$threads" = all ] || what="$what (main thread)"
echo "| adapter | variant | $what | hand-written ÷ variant |"
echo "|---|---|---|---|"
IFS=, read -ra adapter_list <<<"$adapters"
IFS=, read -ra variant_list <<<"$variants"
for adapter in "${adapter_list[@]}"; do
  baseline=""
  for variant in "${variant_list[@]}"; do
    ir=$(count "$variant" "$adapter")
    [ "$variant" = handwritten ] && baseline=$ir
    ratio=$([ -n "$baseline" ] && awk -v b="$baseline" -v v="$ir" 'BEGIN { printf "%.3f", b / v }' || echo n/a)
    printf '| %s | %s | %s | %s |\n' "$adapter" "$variant" "$(printf "%'d" "$ir")" "$ratio"
    [ -z "$profile" ] || echo "  by function: $profile/$adapter-$variant.md" >&2
  done
done

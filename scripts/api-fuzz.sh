#!/usr/bin/env bash
# Fuzzes the admin HTTP API with Schemathesis, driven by its OpenAPI
# description (openapi/admin.yaml), against a throwaway `hallmark up` on
# loopback ports. Does not build: it runs an already-built binary.
#
#   scripts/api-fuzz.sh [EXAMPLES]     (default 150 test cases per operation)
#
#   HALLMARK_BIN        the binary to run (default target/debug/hallmark)
#   API_FUZZ_SEED       seed of the random phase (default 20261123), so CI
#                       runs are repeatable
#   API_FUZZ_PORT       admin API port (default 18081; the agent API gets +1)
#   API_FUZZ_CHECKS     Schemathesis checks, comma-separated (default below)
#   API_FUZZ_KEEP=1     keep the reports and server log even when all passed
#
# Three runs, one server: first every phase (examples, coverage, fuzzing,
# stateful) with a fixed seed; then fuzzing and stateful again derandomized
# (Hypothesis' deterministic mode); both with the trust-admin token `up`
# writes to DIR/env, so every operation is reachable. Last a short fuzzing
# run with an `owner:ops` token (role refusals, owner confinement). Owners
# `ops` and `payments` (the spec's example owner), an entry and a pending
# exception exist beforehand, so that some entries can be created and
# existing ones found. The runs may revoke and rotate only the admin identity
# `api-fuzz-target` (scripts/api-fuzz.toml), never the tokens they run with.
# About 2-3 minutes on 2 cores with the default 150.
#
# Checks: no 5xx; status codes, content types, headers and bodies as
# documented; schema-invalid input refused with 4xx; missing or bad auth
# refused; 405 (with Allow) for undocumented methods; deleted resources gone,
# created ones there. Not `positive_data_acceptance`: whether schema-valid
# input is accepted depends on state and rules the schema cannot describe
# (the owner must exist and be active, SPIFFE IDs must be in the server's
# trust domain, a revocation names exactly one target, `recovery` only for
# `human`, an exception expires within 366 days, Cedar syntax), and the 400
# the spec documents for those is correct.
#
# Any failure, or a panic in the server's log, exits non-zero; the reports
# (VCR cassettes of every request) and the server log are then kept under
# /tmp/hallmark-api-fuzz.*/. Each failure is printed with a curl command
# that reproduces it (add the bearer token). The last line counts what was
# tried:
#   api-fuzz: N operations, C test cases, M requests, F failures
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

st_version=4.32.5
examples=${1:-150}
seed=${API_FUZZ_SEED:-20261123}
port=${API_FUZZ_PORT:-18081}
bin=${HALLMARK_BIN:-target/debug/hallmark}
checks=${API_FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
response_schema_conformance,negative_data_rejection,missing_required_header,ignored_auth,unsupported_method,\
allow_header_conformance,use_after_free,ensure_resource_availability}

log() { printf '==> %s\n' "$*"; }

[ -x "$bin" ] || { echo "api-fuzz: no hallmark binary at $bin (build it, or set HALLMARK_BIN)" >&2; exit 2; }
bin=$(realpath "$bin")

# Schemathesis, pinned, in the project's (gitignored) virtualenv.
[ -x .venv/bin/python ] || python3 -m venv .venv
installed=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true)
if [ "$installed" != "$st_version" ]; then
    log "installing schemathesis $st_version into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check "schemathesis==$st_version"
fi

# A throwaway server: its data, socket, log and the reports live in one
# temporary directory, removed when everything passed.
tmp=$(mktemp -d /tmp/hallmark-api-fuzz.XXXXXX)
server_pid=
status=1
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" = 0 ] && [ -z "${API_FUZZ_KEEP:-}" ]; then rm -rf "$tmp"; else echo "api-fuzz: reports and server log kept in $tmp" >&2; fi
}
trap cleanup EXIT

base=http://127.0.0.1:$port
if curl -s -o /dev/null "$base/live"; then
    echo "api-fuzz: something already listens on 127.0.0.1:$port (set API_FUZZ_PORT)" >&2
    exit 2
fi
log "starting $bin up (admin API $base)"
"$bin" up --data-dir "$tmp/data" --admin-listen "127.0.0.1:$port" --listen "127.0.0.1:$((port + 1))" \
    --socket "$tmp/agent.sock" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/ready" || true)" = 200 ] && [ -s "$tmp/data/env" ] && break
    kill -0 "$server_pid" 2>/dev/null || { tail -30 "$tmp/server.log" >&2; echo "api-fuzz: server exited" >&2; exit 1; }
    sleep 0.1
done
[ -s "$tmp/data/env" ] || { tail -30 "$tmp/server.log" >&2; echo "api-fuzz: server not ready in 60 s" >&2; exit 1; }
# shellcheck disable=SC1091
source "$tmp/data/env" # HALLMARK_SERVER, HALLMARK_TOKEN (trust-admin)
for owner in ops payments; do
    "$bin" owner create "$owner" --contact "$owner@example.org" >/dev/null
done
token_of() { sed -n 's/^ *"token": *"\([^"]*\)".*/\1/p'; }
# An operator's token, to ask for the exception below, and the only identity
# the runs may revoke or rotate (scripts/api-fuzz.toml).
operator_token=$("$bin" admin token create --name api-fuzz-operator --role operator --json | token_of)
"$bin" admin token create --name api-fuzz-target --role auditor >/dev/null
# An entry and a pending exception (asked for by the operator, so that the
# trust-admin may approve it), so that the operations on existing ones
# (show, update, approve, revoke...) get real ids from the first listings.
entry=$("$bin" entry create --spiffe-id spiffe://example.org/api-fuzz --selector unix:uid:4242 --owner ops \
    --json | sed -n 's/^ *"id": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$entry" ] && [ -n "$operator_token" ] ||
    { echo "api-fuzz: could not seed the server" >&2; exit 1; }
HALLMARK_TOKEN=$operator_token "$bin" exception request --entry "$entry" --rule ttl_above_class_max --value 48h \
    --justification "api-fuzz seed" --expires 24h >/dev/null

# One Schemathesis run with TOKEN; its summary is kept in $tmp/NAME.txt, its
# requests in $tmp/NAME/vcr.yaml. Returns Schemathesis' exit status.
st_run() {
    local name=$1 token=$2
    shift 2
    log "schemathesis: $name"
    local rc=0
    # From $tmp: Schemathesis keeps a cache (.schemathesis/) in its working directory.
    (cd "$tmp" && "$root/.venv/bin/st" --config-file "$root/scripts/api-fuzz.toml" run "$root/openapi/admin.yaml" --url "$HALLMARK_SERVER" \
        --header "Authorization: Bearer $token" --checks "$checks" \
        --max-examples "$examples" --workers 1 --no-color \
        --report vcr --report-dir "$tmp/$name" --report-vcr-path "$tmp/$name/vcr.yaml" \
        "$@") >"$tmp/$name.txt" 2>&1 || rc=$?
    # Failures, warnings and the summary; the progress lines above them are noise.
    sed -n '/^=* \(FAILURES\|ERRORS\|WARNINGS\|SUMMARY\) =*$/,$p' "$tmp/$name.txt" | grep -v '^$' | grep . ||
        tail -25 "$tmp/$name.txt"
    return $rc
}

status=0
st_run seeded "$HALLMARK_TOKEN" --seed "$seed" --generation-database none \
    --phases examples,coverage,fuzzing,stateful || status=1
st_run derandomized "$HALLMARK_TOKEN" --generation-deterministic --phases fuzzing,stateful || status=1
# The same calls as owner:ops: role refusals (403) and owner confinement.
# Its token is made only now, so that nothing the runs above did to owners
# and tokens can leave this run one of 401s.
owner_token=$("$bin" admin token create --name "api-fuzz-ops-$seed" --role owner:ops --json | token_of) || true
[ -n "$owner_token" ] || { echo "api-fuzz: could not create the owner:ops token" >&2; status=1; exit 1; }
st_run owner-scoped "$owner_token" --seed "$seed" --generation-database none --phases fuzzing \
    --max-examples $(((examples + 3) / 4)) || status=1

# What was tried: operations, test cases and HTTP requests (the VCR cassette
# holds one interaction per request sent).
ops=$(sed -n 's/^ *Tested: *\([0-9]*\).*/\1/p' "$tmp/seeded.txt" | tail -1)
cases=0 requests=0 failures=0
for name in seeded derandomized owner-scoped; do
    c=$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$tmp/$name.txt" | tail -1)
    r=$(grep -c '^- id:' "$tmp/$name/vcr.yaml" 2>/dev/null || true)
    f=$(tail -1 "$tmp/$name.txt" | sed -n 's/.* \([0-9][0-9]*\) failures\{0,1\}[ ,].*/\1/p')
    e=$(tail -1 "$tmp/$name.txt" | sed -n 's/.* \([0-9][0-9]*\) errors\{0,1\}[ ,].*/\1/p')
    cases=$((cases + ${c:-0})) requests=$((requests + ${r:-0})) failures=$((failures + ${f:-0} + ${e:-0}))
done

if grep -q 'panicked' "$tmp/server.log"; then
    echo "api-fuzz: the server panicked:" >&2
    grep -A5 'panicked' "$tmp/server.log" | head -40 >&2
    status=1 failures=$((failures + 1))
fi
# Schemathesis itself failed (a bad option, a schema it cannot load).
[ "$status" = 0 ] || [ "$failures" != 0 ] || failures=1
[ "$failures" = 0 ] || status=1
echo "api-fuzz: ${ops:-?} operations, $cases test cases, $requests requests, $failures failures"
exit $status

#!/usr/bin/env bash
# Push latency through the git gate versus a direct push to the same OpenSSH server.
#
#   bench/gate/push-latency.sh [ROUNDS]        (default 10 rounds per case; run as root)
#
# Builds the release bundle binary, starts sshd on a free 127.0.0.1 port with generated keys,
# two identical bare upstreams (one pushed to directly, one through the gate), and
# `bottle-bundle gate` in front of the second. Each round makes 1 or 100 new commits (not timed)
# and times `git push` only, alternating direct and gated rounds. Prints min / median / mean in
# milliseconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${1:-10}"

# BOTTLE_BUNDLE_BIN measures another build (e.g. an older commit's) with this same script.
if [ -z "${BOTTLE_BUNDLE_BIN:-}" ]; then
  cargo build --release -q -p bottle-bundle
fi
BIN="${BOTTLE_BUNDLE_BIN:-$PWD/target/release/bottle-bundle}"

T="$(mktemp -d)"
cleanup() {
  [ -n "${GATE_PID:-}" ] && kill "$GATE_PID" 2>/dev/null || true
  [ -f "$T/sshd.pid" ] && kill "$(cat "$T/sshd.pid")" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Not GIT_CONFIG_GLOBAL=/dev/null: git writes config through a lock file renamed over it.
export HOME="$T/home" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL="$T/gitconfig"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
mkdir -p "$HOME" /run/sshd

ssh-keygen -q -t ed25519 -N '' -C bench -f "$T/host_key"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$T/client_key"
cp "$T/client_key.pub" "$T/authorized_keys"
SSH_PORT="$(free_port)"
cat > "$T/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $T/host_key
AuthorizedKeysFile $T/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $T/sshd.pid
LogLevel ERROR
CFG
/usr/sbin/sshd -f "$T/sshd_config" -E "$T/sshd.log"

git init -q -b main "$T/seed"
echo seed > "$T/seed/README"
git -C "$T/seed" add README && git -C "$T/seed" commit -qm seed
for r in direct gated; do
  git init -q --bare -b main "$T/$r.git"
  git -C "$T/seed" push -q "$T/$r.git" main
done

GATE_PORT="$(free_port)"
cat > "$T/bundle.json" <<JSON
{
  "schema_version": 3, "identity": "bench-gate1", "roles": ["gate"],
  "proxy": {"listen": {"tcp": null, "unix": null}, "ca_cert": "-", "ca_key": "-", "routes": [],
            "outbound": {"mode": "direct"}},
  "gate": {
    "listen": {"tcp": "127.0.0.1:$GATE_PORT", "unix": null},
    "mirrors_dir": "$T/mirrors",
    "remotes": [{"name": "app", "upstream": "ssh://root@127.0.0.1:$SSH_PORT$T/gated.git",
                 "identity_file": "$T/client_key", "known_host_key": "$(cat "$T/host_key.pub")",
                 "extra_hosts": []}],
    "scanner_rules": null, "max_push_bytes": 104857600, "push_timeout_secs": 120
  },
  "supervise": null, "pipelock": null, "audit_log": "$T/audit.jsonl"
}
JSON
BOTTLE_LOG=warn "$BIN" gate --config "$T/bundle.json" 2>"$T/gate.log" &
GATE_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$GATE_PORT") 2>/dev/null && break
  sleep 0.1
done

export GIT_SSH_COMMAND="ssh -F none -i $T/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=$T/known_hosts -o LogLevel=ERROR"
git clone -q "ssh://root@127.0.0.1:$SSH_PORT$T/direct.git" "$T/w-direct"
git clone -q "git://127.0.0.1:$GATE_PORT/app.git" "$T/w-gated"

now_ms() { date +%s%3N; }
commits() { # dir n
  for i in $(seq "$2"); do
    printf '%s %s\n' "$RANDOM$RANDOM" "$i" >> "$1/data.txt"
    git -C "$1" add data.txt && git -C "$1" commit -qm "bench $i"
  done
}
stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "min %5d  median %5d  mean %7.1f  (n=%d)\n", a[1], a[int((NR+1)/2)], s/NR, NR}'; }

echo "git $(git --version | cut -d' ' -f3), gate binary $BIN, $ROUNDS rounds, $(nproc) cores"
# Direct and gated pushes alternate round by round, so load from other processes falls on both.
for n in 1 100; do
  : > "$T/times-direct"
  : > "$T/times-gated"
  for _ in $(seq "$ROUNDS"); do
    for path in direct gated; do
      commits "$T/w-$path" "$n"
      start=$(now_ms)
      git -C "$T/w-$path" push -q origin main
      echo $(( $(now_ms) - start )) >> "$T/times-$path"
    done
  done
  for path in direct gated; do
    printf '%3d-commit push, %-6s ms: ' "$n" "$path"
    stats < "$T/times-$path"
  done
done
if [ "$(git -C "$T/gated.git" rev-parse main)" != "$(git -C "$T/w-gated" rev-parse main)" ]; then
  echo "error: the gated pushes did not land upstream" >&2
  exit 1
fi

#!/usr/bin/env bash
# A 3-node hsmbroker cluster on loopback, each node with its own SoftHSM
# token and data directory, for development, demos and failover drills.
#
#   deploy/local-cluster.sh up DIR             make (first time) and start node1..node3
#   deploy/local-cluster.sh down DIR           stop every node (SIGTERM)
#   deploy/local-cluster.sh status DIR [ARGS]  hsmctl cluster status ARGS (e.g. -o json)
#   deploy/local-cluster.sh stop DIR N         stop node N (SIGTERM) and wait for it
#   deploy/local-cluster.sh kill DIR N         kill node N (SIGKILL), as a crash would
#   deploy/local-cluster.sh start DIR N        start node N again (it reopens its state)
#
# Ports: node N listens on BASE+10*(N-1) for gRPC, +1 Raft, +2 metrics and
# health (HTTP), +3 the AWS KMS endpoint (HTTPS). BASE is
# $HSMBROKER_PORT_BASE, default 7410: node1 7410-7413, node2 7420-7423,
# node3 7430-7433. The ports are fixed in each node's configuration at the
# first `up`; later runs reuse them.
#
# DIR holds (all private to the user):
#   ca/             the cluster CA, an admin client certificate, the AWS access keys
#   nodeN/          node N: SoftHSM configuration, token and PINs, TLS files,
#                   hsmbrokerd.yaml (its serve configuration), data/ (Raft state)
#   nodeN.env       exports that point hsmctl, the Go SDK and AWS tools at node N:
#                   HSMBROKER_ADDR, _CA, _CERT, _KEY, _METRICS_ADDR, AWS_ENDPOINT_URL_KMS,
#                   AWS_CA_BUNDLE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
#   cluster.env     the same, with all three nodes in HSMBROKER_ADDR
#   nodeN.pid, nodeN.log
#
# node1 founds the cluster; node2 and node3 join it with one-time tokens
# from `hsmctl cluster join-token`, their HSMs receiving the domain key
# from node1's. PINs, tokens and access keys stay in 0600 files: none is
# put on a command line. Remove DIR (after `down`) to start over.
#
# Binaries: $HSMBROKERD and $HSMCTL when set, else bin/hsmbrokerd and
# bin/hsmctl of this repository, built with `go build` when missing (run
# `make build` to bring them up to date). $HSMBROKER_WAIT bounds the wait
# for a node to be ready, in seconds (default 60).
set -euo pipefail

readonly NODES=(1 2 3)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
wait_secs=${HSMBROKER_WAIT:-60}

die() {
	echo "local-cluster: $*" >&2
	exit 1
}

usage() {
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# binaries sets HSMBROKERD and HSMCTL, building what is missing.
binaries() {
	HSMBROKERD=${HSMBROKERD:-$root/bin/hsmbrokerd}
	HSMCTL=${HSMCTL:-$root/bin/hsmctl}
	local bin
	for bin in "$HSMBROKERD" "$HSMCTL"; do
		if [[ ! -x $bin ]]; then
			echo "building $bin" >&2
			(cd "$root" && go build -o "$bin" "./cmd/$(basename "$bin")")
		fi
	done
}

port_base() {
	local base=${HSMBROKER_PORT_BASE:-7410}
	if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1024 || base + 40 > 65535)); then
		die "HSMBROKER_PORT_BASE=$base: want a number from 1024 to 65495"
	fi
	echo "$base"
}

# addr N OFFSET is node N's loopback address OFFSET (0 gRPC, 1 Raft,
# 2 metrics, 3 AWS KMS, 4 TDE key endpoint).
addr() {
	echo "127.0.0.1:$(($(port_base) + 10 * ($1 - 1) + $2))"
}

check_node() {
	[[ $1 =~ ^[123]$ ]] || die "node $1: want 1, 2 or 3"
}

# pid_of N prints node N's pid when it runs.
pid_of() {
	local file=$dir/node$1.pid pid
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	# A reused pid, or a dead process not yet reaped, is not the node.
	if [[ -r /proc/$pid/cmdline ]]; then
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "hsmbrokerd serve --config $dir/node$1/" || return 1
	fi
	echo "$pid"
}

# metrics_addr N reads node N's metrics address from its env file.
metrics_addr() {
	sed -n 's/^export HSMBROKER_METRICS_ADDR=//p' "$dir/node$1.env"
}

# ready HOST:PORT reports whether /readyz answers 200.
ready() {
	local host=${1%:*} port=${1##*:} line
	line=$( (
		exec 3<>"/dev/tcp/$host/$port"
		printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" >&3
		IFS= read -r -t 5 line <&3 && echo "$line"
	) 2>/dev/null) || return 1
	[[ $line == "HTTP/1."?" 200"* ]]
}

wait_ready() {
	local n=$1 maddr deadline
	maddr=$(metrics_addr "$n")
	deadline=$((SECONDS + wait_secs))
	until ready "$maddr"; do
		if ! pid_of "$n" >/dev/null; then
			tail -n 20 "$dir/node$n.log" >&2 || true
			die "node$n exited before it was ready; see $dir/node$n.log"
		fi
		((SECONDS < deadline)) || die "node$n not ready after ${wait_secs}s; see $dir/node$n.log"
		sleep 0.2
	done
	echo "node$n ready: gRPC $(addr_of "$n" HSMBROKER_ADDR), AWS KMS $(addr_of "$n" AWS_ENDPOINT_URL_KMS)"
}

# addr_of N VAR reads an address from node N's env file.
addr_of() {
	sed -n "s/^export $2=//p" "$dir/node$1.env"
}

# hsmctl runs hsmctl against every node, with the exports of cluster.env
# in its environment only.
hsmctl() {
	(
		set -a
		# shellcheck source=/dev/null
		. "$dir/cluster.env"
		exec "$HSMCTL" "$@"
	)
}

# launch_node N starts node N in the background, unless it runs already,
# and returns once the process is hsmbrokerd; it does not wait for it to
# be ready.
launch_node() {
	local n=$1 pid
	if pid=$(pid_of "$n"); then
		echo "node$n already running (pid $pid)"
		return
	fi
	[[ -f $dir/node$n/hsmbrokerd.yaml ]] || die "node$n is not set up; run: $0 up $dir"
	"$HSMBROKERD" serve --config "$dir/node$n/hsmbrokerd.yaml" </dev/null >>"$dir/node$n.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/node$n.pid"
	# Until the forked shell has exec'd hsmbrokerd, /proc shows the shell's
	# command line and pid_of would take the node for dead: wait for the
	# exec (or the process's end) first.
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "hsmbrokerd serve" && break
		sleep 0.05
	done
}

start_node() {
	launch_node "$1"
	wait_ready "$1"
}

# wait_voter N waits until node N is a voter. A node joins as a non-voter
# and the leader promotes it once it has caught up; until then the
# cluster tolerates no more failures than it did before the join.
wait_voter() {
	local n=$1 out deadline=$((SECONDS + wait_secs))
	until out=$(hsmctl cluster status -o json 2>/dev/null) && [[ $out == *"\"node$n\""* && $out != *'"non_voter"'* ]]; do
		((SECONDS < deadline)) || die "node$n not a voter after ${wait_secs}s; the leader's log says what it waits for ('non-voter not made a voter yet')"
		sleep 0.2
	done
}

# signal_node N SIGNAL signals node N; it fails when the node is not
# running. A node stops cleanly on its first SIGTERM; a second one would
# kill it at once.
signal_node() {
	local pid
	if ! pid=$(pid_of "$1"); then
		rm -f "$dir/node$1.pid"
		return 1
	fi
	kill "-$2" "$pid"
}

# wait_stopped N waits until node N has exited, killing it after 30s.
wait_stopped() {
	local n=$1 pid deadline=$((SECONDS + 30))
	while pid=$(pid_of "$n"); do
		if ((SECONDS >= deadline)); then
			echo "node$n still running 30s after SIGTERM; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			deadline=$((SECONDS + 5))
		fi
		sleep 0.1
	done
	rm -f "$dir/node$n.pid"
}

stop_node() {
	if ! signal_node "$1" "$2"; then
		echo "node$1 is not running"
		return
	fi
	wait_stopped "$1"
	echo "node$1 stopped (SIG$2)"
}

init_node() {
	local n=$1 role=(--bootstrap) m
	if ((n > 1)); then
		role=(--join "$(addr 1 0)")
		for ((m = 2; m < n; m++)); do
			role[1]+=",$(addr "$m" 0)"
		done
	fi
	"$HSMBROKERD" init-node --log-level warn --dir "$dir/node$n" --ca-dir "$dir/ca" --node-id "node$n" \
		--grpc-addr "$(addr "$n" 0)" --raft-addr "$(addr "$n" 1)" --metrics-addr "$(addr "$n" 2)" \
		--kms-addr "$(addr "$n" 3)" --vault-addr "$(addr "$n" 4)" --env-file "$dir/node$n.env" "${role[@]}" >/dev/null
	# A local cluster makes a joined node a voter once it has been caught
	# up for 2 s, not the 10 s a production cluster waits.
	grep -q '^raft:' "$dir/node$n/hsmbrokerd.yaml" || echo 'raft: {promote_settle: 2s}' >>"$dir/node$n/hsmbrokerd.yaml"
}

cmd_up() {
	binaries
	chmod 700 "$dir"
	local n all=""
	for n in "${NODES[@]}"; do
		init_node "$n"
		all+=${all:+,}$(addr_of "$n" HSMBROKER_ADDR)
	done
	(umask 077 && sed "s/^export HSMBROKER_ADDR=.*/export HSMBROKER_ADDR=$all/" "$dir/node1.env" >"$dir/cluster.env")

	# Members (nodes with Raft state) start together: a member alone is not
	# ready until it hears from a leader, which takes a majority. The first
	# time, node1 founds the cluster alone.
	local members=()
	for n in "${NODES[@]}"; do
		if [[ -e $dir/node$n/data/raft/raft.db ]]; then
			members+=("$n")
		fi
	done
	if ((${#members[@]} == 0)); then
		start_node 1
		members=(1)
	else
		for n in "${members[@]}"; do
			launch_node "$n"
		done
		for n in "${members[@]}"; do
			wait_ready "$n"
		done
	fi
	for n in "${NODES[@]}"; do
		[[ " ${members[*]} " == *" $n "* ]] && continue
		# A new member: a one-time token, straight into its 0600 file.
		hsmctl cluster join-token --ttl 15m --node-id "node$n" --out "$dir/node$n/join.token" >/dev/null
		start_node "$n"
		rm -f "$dir/node$n/join.token"
		wait_voter "$n"
	done
	echo
	hsmctl cluster status
	cat <<EOF

To use node N (1-3), or the whole cluster:
    source $dir/nodeN.env      # or: source $dir/cluster.env
    hsmctl keys create --alias alias/demo
    aws kms --endpoint-url "\$AWS_ENDPOINT_URL_KMS" list-keys
EOF
}

cmd_down() {
	local n stopping=()
	for n in "${NODES[@]}"; do
		if signal_node "$n" TERM; then
			stopping+=("$n")
		fi
	done
	for n in "${stopping[@]}"; do
		wait_stopped "$n"
		echo "node$n stopped"
	done
}

main() {
	(($# >= 2)) || usage
	local cmd=$1
	[[ -n $2 ]] || usage
	if [[ $cmd == up ]]; then
		mkdir -p "$2"
	fi
	[[ -d $2 ]] || die "$2: no such directory"
	dir=$(cd "$2" && pwd)
	shift 2
	case $cmd in
	up | down)
		(($# == 0)) || usage
		"cmd_$cmd"
		;;
	status)
		binaries
		[[ -f $dir/cluster.env ]] || die "no cluster in $dir; run: $0 up $dir"
		hsmctl cluster status "$@"
		;;
	start | stop | kill)
		(($# == 1)) || usage
		check_node "$1"
		case $cmd in
		start) binaries && start_node "$1" ;;
		stop) stop_node "$1" TERM ;;
		kill) stop_node "$1" KILL ;;
		esac
		;;
	*) usage ;;
	esac
}

main "$@"

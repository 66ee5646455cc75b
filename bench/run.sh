#!/usr/bin/env bash
# bench/run.sh full|quick|online|fleet — the fleet-scale benchmarks (control
# plane, data plane, per-database fixed cost, online mode) with their raw
# output in bench/results/. `make bench` runs "full" (about an hour), `make
# bench-quick` "quick" (under 5 minutes), `make bench-online` "online",
# `make bench-fleet` "fleet" (about 25 minutes). Each step says the command
# it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-quick}
out=bench/results
mkdir -p "$out"
stamp=$(date -u +%Y%m%d-%H%M%S)

step() { # name, command...
	local name=$1
	shift
	echo "### $name: $*" | tee -a "$out/$name-$stamp.txt"
	"$@" 2>&1 | tee -a "$out/$name-$stamp.txt"
}

demo() { go run ./cmd/fleetdemo --bin bin --dir ".demo/bench-$stamp-$1" "${@:2}"; }

case $mode in
quick)
	step controlplane go run ./bench/controlplane --engines postgres --rows 100000 --runs 1 --warmup 5s --measure 10s --wakeups on --results "$out"
	step tiny-mysql demo tiny-mysql --dbs 100 --tiny --engine mysql --plain-names --max-procs 40
	step dataplane-mysql demo dp-mysql --dbs 1 --engine mysql --size-mib 100 --max-mib 100 --plain-names --baselines
	;;
full)
	step controlplane go run ./bench/controlplane --engines postgres --rows 100000,800000 --runs 3 --warmup 8s --measure 15s --wakeups on --results "$out"
	step controlplane go run ./bench/controlplane --engines postgres --rows 800000 --runs 1 --warmup 8s --measure 15s --wakeups off --results "$out"
	step controlplane go run ./bench/controlplane --engines mariadb --rows 100000,800000 --runs 1 --warmup 8s --measure 15s --results "$out"
	# Hop latency at the default 60 s poll interval, light load: wake-ups.
	step hops go run ./bench/controlplane --engines postgres --rows 100000 --runs 1 --poll 60s --max-procs 40 --warmup 40s --measure 60s --wakeups on --results "$out"
	# Several runs of each: BENCHMARKS.md gives medians with min-max.
	for e in mysql postgres; do
		for run in 1 2 3; do
			step "tiny-$e" demo "tiny-$e-$run" --dbs 500 --tiny --engine "$e" --plain-names --max-procs 40
		done
		for run in 1 2; do
			step "dataplane-$e" demo "dp-$e-$run" --dbs 1 --engine "$e" --size-mib 1024 --max-mib 1024 --plain-names --baselines
		done
	done
	# The same MariaDB database loaded through the client as one script
	# (mysql.jobs 1): what the parallel data part and ranged checksums gain.
	step dataplane-mysql-jobs1 demo dp-mysql-jobs1 --dbs 1 --engine mysql --size-mib 1024 --max-mib 1024 --plain-names --mysql-jobs 1
	;;
online)
	# Write-blocked windows, online against dump: five databases of each
	# size and engine moved one after another (--max-procs 1), each with a
	# writer inserting 100 rows/s through its DNS name the whole time (dump
	# mode at 1 GB: two, for time). PostgreSQL's files are
	# online-window-<MiB>-<mode>, MariaDB's online-window-mysql-<MiB>-<mode>.
	for engine in ${ENGINES:-postgres mysql}; do
		prefix=online-window
		[ "$engine" = mysql ] && prefix=online-window-mysql
		for size in 1 100 1024; do
			for m in online dump; do
				extra=()
				dbs=5
				if [ "$size" = 1024 ] && [ "$m" = online ]; then extra=(--baselines); fi
				if [ "$size" = 1024 ] && [ "$m" = dump ]; then dbs=2; fi
				step "$prefix-$size-$m" demo "win-$engine-$size-$m" --dbs "$dbs" --engine "$engine" --size-mib "$size" --max-mib "$size" \
					--plain-names --mode "$m" --writers "$dbs" --writer-rate 100 --max-procs 1 "${extra[@]}"
			done
		done
	done
	;;
fleet)
	# Online at the fleet's concurrency (issue 31): the 300-database demo in
	# each mode at --max-procs 40 with 10 live writers, three rounds with
	# the modes interleaved so that they share the hour, then one
	# 1,000-database auto run. A run whose rows fail still reports (its
	# exit status is in the file): failures are one of the figures.
	for run in 1 2 3; do
		for m in online auto dump; do
			step "fleet-$m" demo "fleet-$m-$run" --dbs 300 --mode "$m" --writers 10 --max-procs 40 || echo "### exit $?" | tee -a "$out/fleet-$m-$stamp.txt"
		done
	done
	step fleet-auto-1000 demo fleet-auto-1000 --dbs 1000 --mode auto --writers 10 --max-procs 40 || echo "### exit $?" | tee -a "$out/fleet-auto-1000-$stamp.txt"
	;;
*)
	echo "usage: bench/run.sh quick|full|online|fleet" >&2
	exit 2
	;;
esac

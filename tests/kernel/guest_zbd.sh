#!/bin/bash
# Runs INSIDE the VM (tests/kernel/zbd_suite.py boots it): fio's own zoned
# test suite, t/zbd/test-zbd-support, against blockemu's ZNS model over ublk
# and against the kernel's null_blk with the same geometry and limits, in the
# same boot.
#
# Arguments (key=value words, any order):
#   zone_mib=N cap_mib=N conv=N size_mib=N bs=N   geometry (bs: logical block bytes)
#   open=N                                        max_open_zones = max_active_zones for "limits"
#   modes=limits[,nolimits]                       the mode of $BLOCKEMU_DEV0, $BLOCKEMU_DEV1, ...
#   run=TREE:MODE:TESTS                           one suite run per device: TREE is a fio source
#                                                 tree (its ./fio the binary), MODE one of modes,
#                                                 TESTS "all" or test numbers joined by commas
# For each run and each target (blockemu, nullb) it writes
#   $BLOCKEMU_RESULTS/zbd-<version>-<mode>-<target>.txt   the suite's output
#   $BLOCKEMU_RESULTS/zbd-<version>-<mode>-<target>.logs/test-zbd-support.log.N  each test's log
# and prints "ZBD-VM done" at the end.  The exit code is 0 unless the set-up
# failed; judging the results is the host's job (zbd_suite.py).
set -u

results=${BLOCKEMU_RESULTS:?}
work=$(mktemp -d)  # the host's tree is read-only here; the suite writes its logs beside itself
start=$(date +%s)
say() { echo "ZBD-VM [$(( $(date +%s) - start )) s] $*"; }

zone_mib=16 cap_mib=12 conv=8 size_mib=2304 bs=4096 open=14 modes=limits
runs=()
for arg in "$@"; do
    case $arg in
        zone_mib=*|cap_mib=*|conv=*|size_mib=*|bs=*|open=*|modes=*) eval "${arg%%=*}=\${arg#*=}" ;;
        run=*) runs+=("${arg#run=}") ;;
        *) say "unknown argument $arg"; exit 2 ;;
    esac
done

IFS=, read -r -a mode_list <<<"$modes"

# blockemu_dev MODE: the ublk disk the harness made for MODE.
blockemu_dev() {
    local i
    for i in "${!mode_list[@]}"; do
        if [ "${mode_list[$i]}" = "$1" ]; then
            eval "echo \${BLOCKEMU_DEV$i}"
            return 0
        fi
    done
    return 1
}

# null_blk through configfs (as fio's own t/zbd/run-tests-against-nullb does):
# module parameters size the disk only in whole GiB, and the suite runs its
# null_blk-only cases on configfs devices.
modprobe null_blk nr_devices=0 || { say "modprobe null_blk failed"; exit 1; }
nullb_config=/sys/kernel/config/nullb
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
# nullb_create MODE N: /dev/nullbN with the blockemu device's geometry.  The
# configfs folder is named as the disk, which is how the suite recognises null_blk.
nullb_create() {
    local dir=$nullb_config/nullb$2 max=$open
    [ "$1" = nolimits ] && max=0
    mkdir "$dir" || return 1
    echo "$size_mib" >"$dir/size"
    echo "$bs" >"$dir/blocksize"
    echo 1 >"$dir/memory_backed"
    echo 1 >"$dir/zoned"
    echo "$zone_mib" >"$dir/zone_size"
    echo "$cap_mib" >"$dir/zone_capacity"
    echo "$conv" >"$dir/zone_nr_conv"
    echo "$max" >"$dir/zone_max_open"
    echo "$max" >"$dir/zone_max_active"
    echo 1 >"$dir/power"
}

declare -A target_dev
for i in "${!mode_list[@]}"; do
    mode=${mode_list[$i]}
    dev=$(blockemu_dev "$mode")
    [ -b "$dev" ] || { say "no blockemu device for $mode (BLOCKEMU_DEVn)"; exit 1; }
    nullb_create "$mode" "$i" || { say "null_blk $mode: configfs set-up failed"; exit 1; }
    [ -b "/dev/nullb$i" ] || { say "null_blk $mode: no /dev/nullb$i"; exit 1; }
    target_dev[$mode:blockemu]=$dev
    target_dev[$mode:nullb]=/dev/nullb$i
    for target in blockemu nullb; do
        d=${target_dev[$mode:$target]}
        q=/sys/block/${d#/dev/}/queue
        say "$mode $target $d: $(cat "$q/zoned") nr_zones=$(cat "$q/nr_zones")" \
            "chunk_sectors=$(cat "$q/chunk_sectors") max_open=$(cat "$q/max_open_zones")" \
            "max_active=$(cat "$q/max_active_zones") lbs=$(cat "$q/logical_block_size")" \
            "zone_append_max_bytes=$(cat "$q/zone_append_max_bytes")"
    done
done

for run in "${runs[@]}"; do
    IFS=: read -r tree mode tests <<<"$run"
    version=$("$tree/fio" --version)
    version=${version#fio-}
    args=()
    if [ "$tests" != all ]; then
        IFS=, read -r -a numbers <<<"$tests"
        for n in "${numbers[@]}"; do args+=(-t "$n"); done
    fi
    for target in blockemu nullb; do
        dev=${target_dev[$mode:$target]}
        name=zbd-$version-$mode-$target
        # The suite writes its per-test logs beside itself ($0.log.N), on the
        # guest's tmpfs: on the shared results folder (9p) the lines of
        # --debug=zbd slowed fio's writes 25-fold (test 12: 100 s, not 4 s).  A copier brings them over
        # every 15 s, so a run the timeout ends keeps them too.
        suite=$work/$name
        logs=$results/$name.logs
        rm -rf "$suite" "$logs"
        mkdir -p "$suite/t" "$logs"
        cp -r "$tree/t/zbd" "$suite/t/"
        ln -s "$(readlink -f "$tree/fio")" "$suite/fio"
        ( while sleep 15; do cp -u "$suite"/t/zbd/test-zbd-support.log.* "$logs/" 2>/dev/null; done ) &
        copier=$!
        blkzone reset "$dev"
        say "$name: test-zbd-support ${args[*]} $dev"
        t0=$(date +%s)
        # Each line stamped with the seconds since the run began: a test's
        # line is complete when it ends, so the stamps give each test's time.
        (cd "$work" && bash "$suite/t/zbd/test-zbd-support" "${args[@]}" "$dev" 2>&1) |
            while IFS= read -r line; do echo "$(( $(date +%s) - t0 )) $line"; done >"$results/$name.txt"
        kill "$copier"
        cp -u "$suite"/t/zbd/test-zbd-support.log.* "$logs/" 2>/dev/null
        say "$name: $(( $(date +%s) - t0 )) s: $(grep -c PASS "$results/$name.txt") PASS," \
            "$(grep -c FAIL "$results/$name.txt") FAIL, $(grep -c SKIP "$results/$name.txt") SKIP"
    done
done

for i in "${!mode_list[@]}"; do
    echo 0 >"$nullb_config/nullb$i/power"
    rmdir "$nullb_config/nullb$i"
done
say "done"

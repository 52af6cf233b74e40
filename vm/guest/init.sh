#!/bin/sh
# PID 1 of the kpath validation VM, installed as /kpath-init (init=/kpath-init).
#
# No systemd: the VM exists to run one command. A bare init boots in seconds
# under TCG, and leaves nothing running that could add noise to a trace.
# The host passes the run id on the kernel command line (kpath_run=ID), the
# command in the 9p share (.kpath-vm/ID/cmd), and reads back the exit code
# from the share and the START/END markers from the serial console. The
# markers carry the run id so the command's own output cannot fake them.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb KPATH_VM=1

RUN_ID=unknown

# The host shows lines with this prefix even before the command starts.
say() { echo "kpath-vm: $*"; }

power_off() {
    sync
    # PID 1 must not exit while the power-off is in flight (that panics), and
    # once it starts the disk is gone, so no exec of sleep(1): block on
    # opening a FIFO in tmpfs instead, which needs only the shell itself.
    mkfifo /run/kpath-halt 2>/dev/null
    # sysrq 'o' powers off at once; with -no-reboot QEMU then exits 0.
    echo o > /proc/sysrq-trigger
    while :; do read -r _ < /run/kpath-halt; done
}

fail() {
    say "error: $*"
    echo "KPATH-VM-END $RUN_ID rc=125"
    power_off
}

# mnt TYPE SOURCE DIR: Debian's initramfs already moved /dev, /proc, /sys and
# /run into the real root, so only mount what is not there yet.
mnt() {
    mountpoint -q "$3" && return 0
    mkdir -p "$3"
    mount -t "$1" "$2" "$3" || say "warning: cannot mount $1 on $3"
}

mnt proc proc /proc
mnt sysfs sysfs /sys
mnt devtmpfs devtmpfs /dev
mnt devpts devpts /dev/pts
mnt tmpfs tmpfs /dev/shm
mnt tmpfs tmpfs /tmp
mnt tmpfs tmpfs /run
mnt tracefs nodev /sys/kernel/tracing
mnt debugfs nodev /sys/kernel/debug

for arg in $(cat /proc/cmdline); do
    case "$arg" in
        kpath_run=*) RUN_ID=${arg#kpath_run=} ;;
    esac
done
case "$RUN_ID" in
    unknown | "" | *[!A-Za-z0-9_-]*) RUN_ID=unknown; fail "no valid kpath_run= on the kernel command line" ;;
esac

echo kpath-vm > /proc/sys/kernel/hostname
ip link set lo up || say "warning: cannot bring up lo"

modprobe 9pnet_virtio && modprobe 9p || fail "cannot load the 9p modules"
mkdir -p /mnt/host
mount -t 9p -o trans=virtio,version=9p2000.L host /mnt/host || fail "cannot mount the host share"

RUN_DIR=/mnt/host/.kpath-vm/$RUN_ID
[ -f "$RUN_DIR/cmd" ] || fail "no command at $RUN_DIR/cmd"
cd /mnt/host || fail "cannot enter /mnt/host"

echo "KPATH-VM-START $RUN_ID"
# stdin from /dev/null: the console is the host's output channel, not an input.
/bin/sh "$RUN_DIR/cmd" < /dev/null
rc=$?
echo "$rc" > "$RUN_DIR/exit-code"
sync
echo "KPATH-VM-END $RUN_ID rc=$rc"
power_off

#!/bin/busybox sh
# /init of the initramfs that tests/vm boots: it mounts the image disk as
# erofs and writes what the guest kernel shows of it to the second serial
# port, between markers, then powers the VM off. Kernel messages go to the
# first serial port, so they never interleave with the manifest.
#
# /etc/msb-vm.conf (written by vmkit.py) sets WAIT_DEVICES, the block devices
# to wait for, and MOUNTS, one "label:device:options" line per mount to try
# in turn. /etc/modules.load lists the modules to load, dependencies first.
#
# For each mount the second serial port gets either
#   MSB-VM-MOUNT-FAILED <label>, then "D <line>" for mount's error and the
#   kernel's erofs messages,
# or a manifest between
#   MSB-VM-MANIFEST-BEGIN <label> <uname -r> ... MSB-VM-MANIFEST-END <label>
# whose lines are tab-separated, the path last (it may hold spaces):
#   S <raw mode hex> <uid> <gid> <nlink> <inode> <mtime s> <size> <major hex> <minor hex> <path>
#   H <sha256sum's own line: hex, two spaces, path>
#   L <path> <symlink target>
#   X <a line of getfattr -d -e hex output>
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
. /etc/msb-vm.conf

finish() {
	echo "msb-vm: $1"
	sync
	poweroff -f
}

out=/dev/ttyS1
while read -r mod; do
	insmod "/lib/modules/$mod" || echo "msb-vm: insmod $mod failed"
done </etc/modules.load

# virtio_blk probes its disks as it loads, but the device nodes appear a
# little later; wait up to 10 s in all for every one the mounts name.
missing() {
	for dev in $WAIT_DEVICES; do
		[ -b "$dev" ] || return 0
	done
	return 1
}
n=0
while missing && [ "$n" -lt 100 ]; do
	sleep 0.1
	n=$((n + 1))
done

manifest() { # label
	echo "MSB-VM-MANIFEST-BEGIN $1 $(uname -r)"
	cd /mnt || return
	find . -mindepth 1 -exec stat -c 'S	%f	%u	%g	%h	%i	%Y	%s	%t	%T	%n' {} +
	find . -type f -exec sha256sum {} + | sed 's/^/H	/'
	find . -type l | while IFS= read -r p; do
		printf 'L\t%s\t%s\n' "$p" "$(readlink "$p")"
	done
	getfattr -R -P -h -d -m - -e hex . 2>&1 | sed 's/^/X	/'
	cd /
	echo "MSB-VM-MANIFEST-END $1"
}

mkdir -p /mnt
echo "$MOUNTS" | while IFS=: read -r label dev options; do
	[ -n "$label" ] || continue
	if err=$(mount -t erofs -o "$options" "$dev" /mnt 2>&1); then
		manifest "$label" >"$out"
		umount /mnt
	else
		{
			echo "MSB-VM-MOUNT-FAILED $label"
			echo "$err" | sed 's/^/D	/'
			dmesg | grep -i erofs | sed 's/^/D	/'
		} >"$out"
	fi
done
finish "done"

#!/usr/bin/env bash
# Builds what the kernel-client tests boot: Debian's stock kernel (linux-image-amd64, not the
# cloud flavour, which has no 9p) and a busybox-static initramfs carrying the 9p modules in
# dependency order, into target/kernel-client/. Nothing is installed on the host but qemu:
# the packages are fetched with apt-get download and unpacked with dpkg-deb -x. A second run
# with the image in place does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/kernel-client
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
    exit 0
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "kernel-image.sh: qemu-system-x86_64 missing; install with: sudo apt-get install -y qemu-system-x86" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends qemu-system-x86
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
    cd "$work"
    # apt-get download needs the package lists; a fresh machine may have none.
    if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then apt-get update -qq; fi
    kernel=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
    [ -n "$kernel" ] || { echo "kernel-image.sh: no linux-image-*-amd64 behind linux-image-amd64" >&2; exit 1; }
    apt-get download "$kernel" busybox-static >/dev/null 2>&1 || apt-get download "$kernel" busybox-static
    dpkg-deb -x linux-image-*.deb k
    dpkg-deb -x busybox-static_*.deb bb
)
mods=$(echo "$work"/k/lib/modules/*/kernel)
root="$work/root"
mkdir -p "$root"/{bin,proc,sys,dev,mnt,tmp,lib/modules}
cp "$work/bb/bin/busybox" "$root/bin/"
# Dependency order: 9p needs 9pnet, fscache and netfs; fscache needs netfs; the TCP transport
# (trans_fd) needs 9pnet. e1000 is qemu's default network card.
order="fs/netfs/netfs fs/fscache/fscache net/9p/9pnet net/9p/9pnet_fd fs/9p/9p drivers/net/ethernet/intel/e1000/e1000"
for m in $order; do
    cp "$mods/$m.ko" "$root/lib/modules/"
done
cat > "$root/init" <<'INIT'
#!/bin/busybox sh
# The guest: loads the 9p modules, brings up the network (the host's loopback is 10.0.2.2),
# fetches its scenario from the host (kc_script=PORT on the kernel command line), runs it with
# its output on the serial console, and powers off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in netfs fscache 9pnet 9pnet_fd 9p e1000; do
    insmod "/lib/modules/$m.ko" || echo "KC: insmod $m failed"
done
ifconfig lo up
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
route add default gw 10.0.2.2
port=$(sed -n 's/.*kc_script=\([0-9]*\).*/\1/p' /proc/cmdline)
nc 10.0.2.2 "$port" > /scenario.sh
echo "KC: ready"
sh /scenario.sh
echo "KC: exit $?"
poweroff -f
INIT
chmod +x "$root/init"
mkdir -p "$out"
cp "$work"/k/boot/vmlinuz-* "$out/vmlinuz"
(cd "$root" && find . | "$work/bb/bin/busybox" cpio -o -H newc 2>/dev/null) | gzip -1 > "$out/initramfs.cpio.gz"
echo "kernel-image.sh: $out/vmlinuz and $out/initramfs.cpio.gz ready"

"""The kpath validation VM: a cached Debian bookworm image per stock kernel
(6.1 and 6.12: kprobes, BTF, headers for BCC, libbpf for CO-RE) and a QEMU
runner that executes one command in it with the host's working directory
shared in.

accel   -- choose KVM or TCG
recipe  -- the kernels, what goes into each image, and the keys that say when
           to rebuild it
cache   -- where the cached rootfs and image live, and whether they are current
image   -- build the rootfs (mmdebstrap, slow, cached) and the image (fast)
qemu    -- the QEMU command line
console -- split the serial console into boot noise and the command's output
runner  -- boot, stream, collect the exit code
"""

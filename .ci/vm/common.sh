# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts sourcing this
# Settings shared by .ci/vm/setup and .ci/vm/run. Sourced, never executed.

# The cache lives outside the clone so CI machines reuse it between runs.
VM_CACHE=${HVRPC_CACHE:-${HOME:?set HOME or HVRPC_CACHE}/.cache/hvrpc}/vm
VM_KERNEL_DIR=$VM_CACHE/kernel            # vmlinux, modules/*.ko, version
VM_BASE_CPIO=$VM_CACHE/initramfs/base.cpio
VM_VHOST_ROOT=$VM_CACHE/vhost             # cargo install --root
VM_VHOST_BIN=$VM_VHOST_ROOT/bin/vhost-device-vsock
VM_VHOST_VERSION=0.2.0                    # 0.3.0 opens AF_VSOCK on the host: forbidden here

VM_PACKAGES=(qemu-system-x86 busybox-static cpio xz-utils socat patch)

# Load order matters (busybox insmod, no modules.dep).
VM_MODULES_LOOPBACK=(vsock vmw_vsock_virtio_transport_common vsock_loopback)
VM_MODULES_VIRTIO=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
                   vmw_vsock_virtio_transport)

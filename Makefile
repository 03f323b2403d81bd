# Build, demo and test entry points for the Berth workspace.
# `make demo` and `make test` need root; ci/deps.sh installs the Debian packages they use.

CARGO ?= cargo

.PHONY: build demo test lint clean bench

build:
	$(CARGO) build --release --workspace

demo: build
	ci/demo.sh

# The end-to-end test drives the debug binaries that `cargo build` leaves in target/debug.
# The VM tests boot them in QEMU; ci/vm-test.sh prints SKIP with the reason when QEMU,
# the kernel or vhost-device-vsock is missing.
test:
	$(CARGO) test --workspace
	$(CARGO) build --workspace
	ci/e2e.sh target/debug
	BERTH_VM_DIR=$(VM_DIR) CARGO=$(CARGO) ci/vm-test.sh target/debug

# Timings are never part of `make test`. BENCH_ARGS=--quick runs a tenth of the iterations.
bench:
	CARGO=$(CARGO) ci/bench.sh $(BENCH_ARGS)

# The guest VM: VM_DIR holds the unpacked Debian kernel, the initramfs and the
# vhost-device-vsock daemon that serves the guest's vsock as a unix socket.
VM_DIR ?= build/vm
VHOST_VSOCK := $(VM_DIR)/cargo/bin/vhost-device-vsock
# The VM tests compile an AppArmor profile for the guest with Debian's apparmor_parser,
# unpacked from its package without installing it.
APPARMOR_PARSER := $(VM_DIR)/apparmor/apparmor_parser
# They also compile an SELinux policy written in CIL with Debian's secilc, unpacked with
# its libsepol2 the same way.
SECILC := $(VM_DIR)/selinux/secilc

.PHONY: image vm-demo vm-tools

$(VHOST_VSOCK):
	$(CARGO) install --locked vhost-device-vsock --version 0.3.0 --root $(VM_DIR)/cargo

$(APPARMOR_PARSER):
	vm/fetch-apparmor.sh $(VM_DIR)/apparmor

$(SECILC):
	vm/fetch-selinux.sh $(VM_DIR)/selinux

vm-tools: $(VHOST_VSOCK) $(APPARMOR_PARSER) $(SECILC)

image:
	$(CARGO) build --release -p berth-agent
	vm/fetch-kernel.sh $(VM_DIR)/kernel
	vm/build-image.sh $(VM_DIR) target/release/berth-agent

vm-demo: image vm-tools
	$(CARGO) build --release -p berth-ctl
	VHOST_DEVICE_VSOCK=$(VHOST_VSOCK) vm/demo.sh --image $(VM_DIR) --berth target/release/berth

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf --one-file-system build

# Build, demo and test entry points for the Berth workspace.
# `make demo` and `make test` need root; ci/deps.sh installs the Debian packages they use.

CARGO ?= cargo

.PHONY: build demo test lint clean

build:
	$(CARGO) build --release --workspace

demo: build
	ci/demo.sh

# The end-to-end test drives the debug binaries that `cargo build` leaves in target/debug.
test:
	$(CARGO) test --workspace
	$(CARGO) build --workspace
	ci/e2e.sh target/debug

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf --one-file-system build

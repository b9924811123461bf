# The two commands of the contract: `make demo` and `make test`.
.PHONY: demo test bench crash build setup lint fmt clean

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

# Issue 4's crash harness at full scale (>= 50k records, >= 20 SIGKILLs); sizes via TRADESTREAM_CRASH_*.
crash:
	scripts/crash.sh

setup:
	scripts/setup.sh

build: setup
	cargo build --release --locked

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

clean:
	cargo clean
	rm -rf .tradestream

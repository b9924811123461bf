# The two commands of the contract: `make demo` and `make test`.
.PHONY: demo test bench build setup lint fmt clean

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

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

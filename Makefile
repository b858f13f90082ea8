.PHONY: run test bench clean

run:  ## set up and run the demo end to end
	bash scripts/run.sh

test:  ## set up, then ruff, mypy and pytest
	bash scripts/test.sh

bench:  ## benchmarks (minutes; writes bench/out/*.json)
	bash scripts/bootstrap.sh
	.venv/bin/python bench/seal_throughput.py
	.venv/bin/python bench/load_overhead.py
	.venv/bin/python bench/guard_overhead.py
	.venv/bin/python bench/paddle_load.py
	.venv/bin/python bench/device_checks.py
	if command -v wrk >/dev/null; then .venv/bin/python bench/gateway_overhead.py; \
	else echo "bench/gateway_overhead.py skipped: needs wrk (apt-get install wrk)"; fi

clean:
	rm -rf .venv .demo bench/out .pytest_cache .mypy_cache .ruff_cache

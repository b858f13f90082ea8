.PHONY: run demo test bench mutation clean

run:  ## set up, then the whole system on this machine (modelseal up; Ctrl-C stops it)
	bash scripts/run.sh

demo:  ## set up, then the offline library demo (modelseal demo: seal, load, license by hand)
	bash scripts/bootstrap.sh
	.venv/bin/python scripts/demo.py

test:  ## set up, then ruff, mypy and pytest
	bash scripts/test.sh

bench:  ## benchmarks (minutes; writes bench/out/*.json)
	bash scripts/bootstrap.sh
	.venv/bin/python -m pip install --quiet -e ".[bench]"
	.venv/bin/python -m pip install --quiet --no-deps "tensorizer==2.12.1"
	.venv/bin/python bench/seal_throughput.py
	.venv/bin/python bench/load_overhead.py
	.venv/bin/python bench/guard_overhead.py
	.venv/bin/python bench/paddle_load.py
	.venv/bin/python bench/device_checks.py
	if command -v wrk >/dev/null; then .venv/bin/python bench/gateway_overhead.py; \
	else echo "bench/gateway_overhead.py skipped: needs wrk (apt-get install wrk)"; fi

mutation:  ## mutation testing of the security-critical modules (20 min budget; see tests/MUTATION.md)
	bash scripts/bootstrap.sh
	PY=.venv/bin/python nice -n $${MUTATION_NICE:-0} bash scripts/mutation.sh \
		--max-minutes $${MUTATION_MINUTES:-20} $${MUTATION_ARGS:-}

clean:
	rm -rf .venv .demo bench/out .pytest_cache .mypy_cache .ruff_cache .mutation

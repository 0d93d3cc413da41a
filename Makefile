# Thin wrappers over scripts/: every target works from a fresh clone.
.PHONY: setup demo test test-unit serve lint bench-quality bench-serving bench-reliability bench-gpu bench-scale bench-teacher clean

setup:
	./scripts/setup.sh

demo: setup
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/fetch_assets.py
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/demo.py

test:
	./scripts/test.sh

test-unit: setup
	.venv/bin/python -m pytest tests/unit -q

serve: setup
	.venv/bin/python -m app.serve

lint: setup
	.venv/bin/ruff check app worker tests scripts bench tailor_cli tailor tailor_common
	.venv/bin/mypy

# Re-prove the reliability matrix on real processes and rewrite bench/results/reliability.md
# (only scenarios whose tests pass get a row).
bench-reliability: setup
	rm -f bench/results/reliability.json bench/results/reliability.md
	TAILOR_RELIABILITY_REPORT=$(CURDIR)/bench/results/reliability.md ./scripts/test.sh \
		tests -m reliability

# Serving benchmark (never part of `make test`): needs a real student, made once by a
# small demo run in var/bench-demo; results go to bench/results/serving.{json,md,png}.
bench-serving: setup
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/fetch_assets.py
	test -f var/bench-demo/tailor.db || TAILOR_CACHE_DIR=$(CURDIR)/var/cache \
	  .venv/bin/python scripts/demo.py --train 400 --eval 50 --home var/bench-demo
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python bench/serving.py

clean:
	rm -rf var/demo var/bench

bench-quality: setup
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/fetch_assets.py
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python bench/quality.py --corpus 600 --eval 300 --seeds 3

# One job's annotation on 1, 2 and 4 distributed workers (throwaway PostgreSQL + Redis, a
# teacher server with a fixed latency per request); bench/results/scale.{json,md}.
bench-scale: setup
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/fetch_assets.py
	bash -c 'source scripts/services.sh && services_start && trap services_stop EXIT && \
	  .venv/bin/python bench/scale.py --texts 3000 --workers 1,2,4 --latency-ms 100'

# Teacher load time (GGUF vs the converted folder in the model cache) and CPU switches (int8,
# length bucketing, prefix cache), each for speed and agreement; bench/results/teacher.{json,md}.
bench-teacher: setup
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python scripts/fetch_assets.py
	TAILOR_CACHE_DIR=$(CURDIR)/var/cache .venv/bin/python bench/teacher.py

# GPU checks (needs CUDA; same-architecture models built from configs, no weights needed):
# bf16 teacher throughput, student LoRA training and serving; bench/results/gpu.{json,md}.
bench-gpu: setup
	.venv/bin/python bench/gpu.py

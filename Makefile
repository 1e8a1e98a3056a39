# Fuzzing, sanitizers and soak (see fuzz/, tools/, benchmarks/soak.py).
#   make fuzz FUZZ_SECONDS=60   each atheris harness for FUZZ_SECONDS (new inputs kept
#                               in fuzz/corpus/<harness>, crashes in fuzz/crashes/)
#   make fuzz-ci                each for about 20 s
#   make corpus                 (re)build the seed corpora from the captures and rules
#   make asan | valgrind | soak
PYTHON ?= python
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 20
HARNESSES ?= engine pcap rules
SOAK_PACKETS ?= 10000000

.PHONY: fuzz fuzz-ci corpus asan valgrind soak

fuzz/corpus/engine:
	$(PYTHON) fuzz/make_corpus.py

corpus:
	$(PYTHON) fuzz/make_corpus.py

fuzz: fuzz/corpus/engine
	@mkdir -p fuzz/crashes
	@set -e; for h in $(HARNESSES); do \
	  echo "== fuzz_$$h for $(FUZZ_SECONDS) s"; \
	  $(PYTHON) fuzz/fuzz_$$h.py fuzz/corpus/$$h -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=fuzz/crashes/$$h- -print_final_stats=1 2>fuzz/fuzz_$$h.log \
	    || { tail -n 30 fuzz/fuzz_$$h.log; exit 1; }; \
	  grep -E "^(Done|stat::number_of_executed_units)" fuzz/fuzz_$$h.log || true; \
	done

fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_CI_SECONDS)

asan:
	bash tools/asan_test.sh

valgrind:
	bash tools/valgrind_capture.sh

soak:
	$(PYTHON) benchmarks/soak.py --packets $(SOAK_PACKETS)

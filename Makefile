# shrink - build, test, demo, install.
#   make            library (static + shared) and the shrink CLI in $(BUILD)
#   make test       install missing Debian packages (as root), build, run all tests
#   make demo       install missing packages, train + evaluate + export, tell a story
#   make asan       the tests under AddressSanitizer + UndefinedBehaviorSanitizer
#   make install    PREFIX=/usr/local: library, include/shrink.h, shrink.pc, CLI
BUILD    ?= build
PREFIX   ?= /usr/local
CC       ?= cc
OPT      ?= -O2
SAN      ?=
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
              -fPIC -fopenmp -Iinclude -Isrc -I$(BUILD)/gen \
              -I$(BLAS_INC)
CFLAGS  ?= $(OPT) -g -fvect-cost-model=dynamic
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS) $(SAN)
# OpenBLAS: Debian's OpenMP build, linked explicitly (whatever the system's
# BLAS alternative is), so that its threads are our OpenMP threads: the
# pthread build's own threads fight OpenMP's for the cores (measured: lenet5
# training 0.81x -> 1.49x PyTorch's images/s on 2 cores).
BLAS_DIR = /usr/lib/x86_64-linux-gnu/openblas-openmp
BLAS_INC = /usr/include/x86_64-linux-gnu/openblas-openmp
LDLIBS  = -lprotobuf-c -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas -lz -lm -lpthread
LDFLAGS += -fopenmp $(SAN)

SRC := $(wildcard src/core/*.c src/graph/*.c src/ops/*.c src/runtime/*.c src/train/*.c \
                  src/compress/*.c src/io/*.c src/eval/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/*.c)
GEN_C := $(BUILD)/gen/onnx.pb-c.c
OBJ := $(patsubst %.c,$(BUILD)/%.o,$(SRC)) $(BUILD)/gen/onnx.pb-c.o
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
TEST_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(TEST_SRC))
LIB := $(BUILD)/libshrink.a
SO := $(BUILD)/libshrink.so
BIN := $(BUILD)/shrink
TESTBIN := $(BUILD)/run_tests

.PHONY: all deps test-deps demo-deps bench-deps test demo asan install clean examples bench
all: $(LIB) $(SO) $(BIN)

$(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h: /usr/include/onnx/onnx.proto
	@mkdir -p $(BUILD)/gen
	cp /usr/include/onnx/onnx.proto $(BUILD)/gen/onnx.proto
	cd $(BUILD)/gen && protoc-c --c_out=. onnx.proto

$(BUILD)/gen/onnx.pb-c.o: $(BUILD)/gen/onnx.pb-c.c
	$(CC) $(ALL_CFLAGS) -w -c $< -o $@

$(BUILD)/%.o: %.c include/shrink.h $(BUILD)/gen/onnx.pb-c.h $(wildcard src/*/*.h) $(wildcard tests/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB): $(OBJ)
	rm -f $@
	ar rcs $@ $^

$(SO): $(OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) -o $@ $(CLI_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS)

$(TESTBIN): $(TEST_OBJ) $(LIB)
	$(CC) -o $@ $(TEST_OBJ) $(LIB) $(LDFLAGS) $(LDLIBS)

deps:
	@bash scripts/deps.sh build

test-deps:
	@bash scripts/deps.sh test

demo-deps:
	@bash scripts/deps.sh demo

bench-deps:
	@bash scripts/deps.sh bench

# The README's test command.
test: test-deps
	@$(MAKE) --no-print-directory all $(TESTBIN)
	@bash tests/run.sh $(BUILD)

asan: test-deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  all build-asan/run_tests
	@ASAN_OPTIONS=detect_leaks=1 SHRINK_TEST_QUICK=1 bash tests/run.sh build-asan

demo: demo-deps
	@$(MAKE) --no-print-directory all
	@bash scripts/demo.sh $(BUILD)

examples: $(LIB)
	$(CC) $(ALL_CFLAGS) examples/run_model.c -o $(BUILD)/run_model $(LIB) $(LDFLAGS) $(LDLIBS)

bench: bench-deps all
	@bash bench/run.sh $(BUILD)

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(SO) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/shrink.h $(DESTDIR)$(PREFIX)/include/
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' shrink.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/shrink.pc

clean:
	rm -rf build build-asan

# netkit build: BPF objects (clang, CO-RE against this kernel's BTF), the venv, tests, man pages.
# The README's two commands call tools/bootstrap.sh, which installs apt packages and then runs `make run|test`.
PY        := /usr/bin/python3
VENV      := .venv
VPY       := $(VENV)/bin/python
CLANG     ?= clang
ARCH      := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
BPF_SRCS  := $(wildcard bpf_programs/*.bpf.c)
BPF_OBJS  := $(patsubst bpf_programs/%.bpf.c,netkit/bpf/%.bpf.o,$(BPF_SRCS))
BPF_HDRS  := $(wildcard bpf_programs/*.h)
VMLINUX   := build/vmlinux.h
LINKEMU   := $(if $(wildcard tools/testbed/linkemu.c),build/linkemu)
# tests/test_engine.py builds its test programs with these flags too (make -s bpf-cflags).
BPF_CFLAGS := -O2 -g -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -Wno-unused-function \
	-Ibuild -Ibpf_programs
RUN_ARGS  ?= 1 5

.PHONY: all bpf bpf-cflags venv run test vmtest man bench mutate dist clean
all: venv bpf $(LINKEMU)

$(VMLINUX):
	@mkdir -p build
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

netkit/bpf/%.bpf.o: bpf_programs/%.bpf.c $(BPF_HDRS) $(VMLINUX)
	@mkdir -p netkit/bpf
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

bpf: $(BPF_OBJS)

bpf-cflags:
	@echo $(BPF_CFLAGS)

build/linkemu: tools/testbed/linkemu.c
	@mkdir -p build
	$(CC) -O2 -Wall -o $@ $< -lm

$(VENV)/.installed: pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.installed

# The main job: socket statistics, one line a second for five seconds.
run: all
	$(VENV)/bin/netkit sockstat $(RUN_ARGS)

# The whole suite on this kernel, then the vm subset on Debian 12's 6.1 under qemu.
test: all
	$(VPY) -m pytest -q -p no:cacheprovider --durations=12
	$(MAKE) vmtest

# One boot of the second kernel (tools/vmtest.py): the tests marked vm, there.
vmtest: all
	$(VPY) -m tools.vmtest pytest --durations=12

man: venv
	$(VPY) tools/genman.py man

bench: all dist
	$(VPY) bench/run.py

# Plants each mutant of tools/mutate/mutants.py in a scratch copy and runs its tests (slow).
mutate: all
	$(VPY) -m tools.mutate

# dist/netkit.pyz (one file for another host) and dist/netkit-VERSION-py3-none-linux_ARCH.whl.
dist: venv bpf
	$(VPY) tools/dist.py

clean:
	rm -rf build dist netkit/bpf/*.bpf.o

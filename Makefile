# podnet: build, test and install.
#   make                       release build of every binary
#   make test                  the test suite (root: tests use network namespaces)
#   make install [DESTDIR=/x]  CNI plugins to /opt/cni/bin, example conflist to
#                              /etc/cni/net.d, daemons and tools to $(PREFIX)/bin
PREFIX       ?= /usr/local
DESTDIR      ?=
CNI_BIN_DIR  ?= /opt/cni/bin
CNI_CONF_DIR ?= /etc/cni/net.d
PROFILE      ?= release
TARGET_DIR   ?= target/$(PROFILE)

CNI_PLUGINS := podnet-bridge podnet-ipam podnet-host-gw podnet-vxlan
DAEMONS     := podnet-node podnet-proxy podnet-dns podnetctl podnet-lab

.PHONY: all build test install install-only

all: build

build:
ifeq ($(PROFILE),release)
	cargo build --release --workspace --bins
else
	cargo build --workspace --bins
endif

test:
	bash scripts/test

install: build install-only

# Installs what is already built (used by the tests, and by packagers who build separately).
install-only:
	install -d $(DESTDIR)$(CNI_BIN_DIR) $(DESTDIR)$(CNI_CONF_DIR) $(DESTDIR)$(PREFIX)/bin
	for p in $(CNI_PLUGINS); do install -m 0755 $(TARGET_DIR)/$$p $(DESTDIR)$(CNI_BIN_DIR)/$$p; done
	for p in $(DAEMONS); do install -m 0755 $(TARGET_DIR)/$$p $(DESTDIR)$(PREFIX)/bin/$$p; done
	install -m 0644 deploy/10-podnet.conflist $(DESTDIR)$(CNI_CONF_DIR)/10-podnet.conflist

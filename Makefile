# fusegate: build, install and test.
#   make                 build ./bin/fusegate
#   make install         build, then install-files (as root; PREFIX, DESTDIR)
#   make install-files   install an already built $(BIN): the binary, the systemd
#                        units, the sysusers entry, the modules-load.d entry (CUSE,
#                        loaded at once), the README and, unless one
#                        exists, /etc/fusegate/fusegate.toml (the embedded default)
#   make uninstall       stop and disable the units, remove what install put
#                        (the configuration and /var/lib/fusegate stay)
#   make test            the whole test suite (scripts/test, what CI runs)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= /etc/systemd/system
SYSUSERS  ?= /usr/lib/sysusers.d
MODLOAD   ?= /usr/lib/modules-load.d
CONFDIR   ?= /etc/fusegate
DOCDIR    ?= $(PREFIX)/share/doc/fusegate
BIN       ?= bin/fusegate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build install install-files uninstall test clean
all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/fusegate ./cmd/fusegate

install: build
	$(MAKE) install-files BIN=bin/fusegate

# The units name /usr/local/bin/fusegate and /usr/local/share/doc; they are
# rewritten for another PREFIX.
install-files:
	@test -x $(BIN) || { echo "no $(BIN): run 'make install', or give BIN=path/to/fusegate" >&2; exit 1; }
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/fusegate
	install -d $(DESTDIR)$(UNITDIR)
	sed 's|/usr/local/bin/fusegate|$(BINDIR)/fusegate|; s|/usr/local/share/doc|$(PREFIX)/share/doc|' \
		systemd/fusegate.service > $(DESTDIR)$(UNITDIR)/fusegate.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/fusegate.service
	install -m 0644 systemd/fusegate.socket $(DESTDIR)$(UNITDIR)/fusegate.socket
	install -D -m 0644 systemd/fusegate.sysusers $(DESTDIR)$(SYSUSERS)/fusegate.conf
	install -D -m 0644 systemd/fusegate.modules-load $(DESTDIR)$(MODLOAD)/fusegate.conf
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	test -e $(DESTDIR)$(CONFDIR)/fusegate.toml || \
		{ install -d $(DESTDIR)$(CONFDIR) && $(BIN) config default > $(DESTDIR)$(CONFDIR)/fusegate.toml; }
	@if [ -z "$(DESTDIR)" ] && [ ! -e /dev/cuse ]; then \
		modprobe -q cuse || echo "no CUSE in this kernel: fusegate's devices will not be created (its mounts work)"; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers $(SYSUSERS)/fusegate.conf && systemctl daemon-reload && \
		echo "installed; start with: systemctl enable --now fusegate.socket fusegate.service"; \
	fi

uninstall:
	-systemctl disable --now fusegate.service fusegate.socket 2>/dev/null
	rm -f $(DESTDIR)$(BINDIR)/fusegate $(DESTDIR)$(UNITDIR)/fusegate.service \
		$(DESTDIR)$(UNITDIR)/fusegate.socket $(DESTDIR)$(SYSUSERS)/fusegate.conf \
		$(DESTDIR)$(MODLOAD)/fusegate.conf
	rm -rf $(DESTDIR)$(DOCDIR)
	-systemctl daemon-reload 2>/dev/null

test:
	scripts/test

clean:
	rm -rf bin

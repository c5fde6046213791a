# fusegate: build, install and test.
#   make                 build ./bin/fusegate
#   make install         install the binary, systemd units, sysusers entry and
#                        a default configuration (as root; PREFIX, DESTDIR)
#   make test            the whole test suite (scripts/test, what CI runs)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
UNITDIR   ?= /etc/systemd/system
SYSUSERS  ?= /usr/lib/sysusers.d
CONFDIR   ?= /etc/fusegate
DOCDIR    ?= $(PREFIX)/share/doc/fusegate
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build install uninstall test clean
all: build

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/fusegate ./cmd/fusegate

install: build
	install -D -m 0755 bin/fusegate $(DESTDIR)$(BINDIR)/fusegate
	sed 's|/usr/local/bin/fusegate|$(BINDIR)/fusegate|; s|/usr/local/share/doc|$(PREFIX)/share/doc|' systemd/fusegate.service > fusegate.service.tmp
	install -D -m 0644 fusegate.service.tmp $(DESTDIR)$(UNITDIR)/fusegate.service
	rm -f fusegate.service.tmp
	install -D -m 0644 systemd/fusegate.socket $(DESTDIR)$(UNITDIR)/fusegate.socket
	install -D -m 0644 systemd/fusegate.sysusers $(DESTDIR)$(SYSUSERS)/fusegate.conf
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	test -e $(DESTDIR)$(CONFDIR)/fusegate.toml || \
		{ mkdir -p $(DESTDIR)$(CONFDIR) && bin/fusegate config default > $(DESTDIR)$(CONFDIR)/fusegate.toml; }
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemd-sysusers && systemctl daemon-reload && \
		echo "installed; start with: systemctl enable --now fusegate.socket fusegate.service"; \
	fi

uninstall:
	-systemctl disable --now fusegate.service fusegate.socket 2>/dev/null
	rm -f $(DESTDIR)$(BINDIR)/fusegate $(DESTDIR)$(UNITDIR)/fusegate.service \
		$(DESTDIR)$(UNITDIR)/fusegate.socket $(DESTDIR)$(SYSUSERS)/fusegate.conf
	rm -rf $(DESTDIR)$(DOCDIR)

test:
	scripts/test

clean:
	rm -rf bin

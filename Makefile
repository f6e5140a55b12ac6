# mod_tcpcrypt: build and install the whole stack.
#
#   make                      release build of every crate (as a normal user)
#   sudo make install         install what `make` built (never builds as root)
#   sudo make uninstall       remove it again (config files are kept)
#   sudo make test            the whole test suite (scripts/test.sh)
#   sudo make bench           plain TCP vs tcpcrypt benchmark (scripts/bench.sh;
#                             BENCH_ARGS="--rounds 9" passes options on)
#   make deb                  Debian packages in $(CARGO_TARGET_DIR)/debian
#                             (dist/deb/build.sh: debian/ and dpkg-buildpackage)
#
# Variables (all may be given on the command line):
#   PREFIX=/usr/local         binaries, library, header, pkg-config file, docs
#   SYSCONFDIR=/etc           tcpcrypt/tcpcryptd.conf goes below it
#   DESTDIR=                  stage the installation under another root
#   CARGO_TARGET_DIR=target   where cargo builds (also read from the environment)
#   APXS=apxs                 the httpd build the Apache module is installed into
#   WITH_APACHE=yes           `no` neither builds nor installs the Apache module
#   SYSTEMDUNITDIR=...        where tcpcryptd.service goes
#
# The Apache module goes where httpd looks for modules (`apxs -q LIBEXECDIR`,
# /usr/lib/apache2/modules on Debian) and its .load/.conf into
# mods-available, whatever PREFIX is.

PREFIX ?= /usr/local
EXEC_PREFIX ?= $(PREFIX)
BINDIR ?= $(EXEC_PREFIX)/bin
SBINDIR ?= $(EXEC_PREFIX)/sbin
LIBDIR ?= $(EXEC_PREFIX)/lib
DATADIR ?= $(PREFIX)/share
DOCDIR ?= $(DATADIR)/doc/tcpcrypt
SYSCONFDIR ?= /etc
CONFDIR ?= $(SYSCONFDIR)/tcpcrypt
# systemd searches /usr/lib/systemd/system and /usr/local/lib/systemd/system
# itself; for any other prefix the unit goes to the admin's directory.
ifneq ($(filter /usr /usr/local,$(PREFIX)),)
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
else
SYSTEMDUNITDIR ?= $(SYSCONFDIR)/systemd/system
endif

DESTDIR ?=
APXS ?= apxs
WITH_APACHE ?= yes
CARGO ?= cargo
CARGO_FLAGS ?= --locked
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
RELEASE := $(CARGO_TARGET_DIR)/release

INSTALL ?= install
DOCS := docs/operator-guide.md docs/app-developer-guide.md \
	docs/control-protocol.md docs/architecture.md docs/channel-bound-auth.md
EXAMPLES := $(filter-out docs/examples/check.sh,$(wildcard docs/examples/*))
# What `make` must have produced before `make install` can run.
ARTIFACTS := $(RELEASE)/tcpcryptd $(RELEASE)/tcpcrypt \
	$(RELEASE)/libtcpcrypt.so $(RELEASE)/libtcpcrypt.a
ifeq ($(WITH_APACHE),yes)
ARTIFACTS += $(RELEASE)/libmod_tcpcrypt.so
endif

.PHONY: deb all build install install-daemon install-cli install-lib \
	install-apache install-systemd install-config install-docs \
	post-install uninstall test bench check-artifacts clean

all: build

# Without Apache the module is not built either (it needs apache2-dev).
ifeq ($(WITH_APACHE),yes)
BUILD_SCOPE := --workspace
else
BUILD_SCOPE := --workspace --exclude mod_tcpcrypt
endif

build:
	$(CARGO) build --release $(BUILD_SCOPE) $(CARGO_FLAGS)

# Installing never builds: `sudo make install` must not run cargo as root
# (nor need cargo in root's PATH).
check-artifacts:
	@missing=0; for f in $(ARTIFACTS); do \
	  if [ ! -f "$$f" ]; then echo "make install: $$f is missing" >&2; missing=1; fi; \
	done; \
	if [ $$missing -ne 0 ]; then \
	  echo "make install: run \`make\` first (as your user), with the same CARGO_TARGET_DIR" >&2; \
	  exit 1; \
	fi

install: check-artifacts install-daemon install-cli install-lib install-systemd \
	install-config install-docs
ifeq ($(WITH_APACHE),yes)
install: install-apache
endif
install:
	@$(MAKE) --no-print-directory post-install

install-daemon: check-artifacts
	$(INSTALL) -d "$(DESTDIR)$(SBINDIR)"
	$(INSTALL) -m 0755 "$(RELEASE)/tcpcryptd" "$(DESTDIR)$(SBINDIR)/tcpcryptd"

install-cli: check-artifacts
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)"
	$(INSTALL) -m 0755 "$(RELEASE)/tcpcrypt" "$(DESTDIR)$(BINDIR)/tcpcrypt"

# libtcpcrypt.so (with soname links), libtcpcrypt.a, PREFIX/include/
# tcpcrypt/tcpcrypt.h and LIBDIR/pkgconfig/tcpcrypt.pc written for this prefix.
install-lib: check-artifacts
	DESTDIR="$(DESTDIR)" bash crates/tcpcrypt-client/install.sh \
	  "$(PREFIX)" "$(RELEASE)" "$(LIBDIR)"

install-apache: check-artifacts
	DESTDIR="$(DESTDIR)" APXS="$(APXS)" sh crates/mod_tcpcrypt/install.sh \
	  "$(RELEASE)/libmod_tcpcrypt.so"

install-systemd:
	$(INSTALL) -d "$(DESTDIR)$(SYSTEMDUNITDIR)"
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@CONFDIR@|$(CONFDIR)|g' \
	    -e 's|@DOCDIR@|$(DOCDIR)|g' dist/systemd/tcpcryptd.service \
	  > "$(DESTDIR)$(SYSTEMDUNITDIR)/tcpcryptd.service"
	chmod 0644 "$(DESTDIR)$(SYSTEMDUNITDIR)/tcpcryptd.service"

# An existing tcpcryptd.conf is the admin's: never overwritten. The shipped
# one is always available as tcpcryptd.conf.dist for comparison.
install-config:
	$(INSTALL) -d "$(DESTDIR)$(CONFDIR)"
	$(INSTALL) -m 0644 dist/etc/tcpcryptd.conf "$(DESTDIR)$(CONFDIR)/tcpcryptd.conf.dist"
	@if [ -e "$(DESTDIR)$(CONFDIR)/tcpcryptd.conf" ]; then \
	  echo "keeping existing $(DESTDIR)$(CONFDIR)/tcpcryptd.conf (new defaults in tcpcryptd.conf.dist)"; \
	else \
	  $(INSTALL) -m 0644 dist/etc/tcpcryptd.conf "$(DESTDIR)$(CONFDIR)/tcpcryptd.conf"; \
	  echo "installed $(DESTDIR)$(CONFDIR)/tcpcryptd.conf"; \
	fi

install-docs:
	$(INSTALL) -d "$(DESTDIR)$(DOCDIR)/examples"
	$(INSTALL) -m 0644 $(DOCS) "$(DESTDIR)$(DOCDIR)/"
	$(INSTALL) -m 0644 $(EXAMPLES) "$(DESTDIR)$(DOCDIR)/examples/"

# Steps that only make sense on the live system, not in a staging DESTDIR.
post-install:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
	  if command -v ldconfig >/dev/null 2>&1; then ldconfig; fi; \
	  if ! getent group tcpcrypt >/dev/null 2>&1; then \
	    groupadd --system tcpcrypt && echo "created group tcpcrypt (members may query tcpcryptd)"; \
	  fi; \
	  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
	    systemctl daemon-reload; \
	  fi; \
	fi
	@echo
	@echo "Next steps (see $(DOCDIR)/operator-guide.md):"
	@echo "  edit $(CONFDIR)/tcpcryptd.conf, then: systemctl enable --now tcpcryptd"
	@echo "  usermod -aG tcpcrypt www-data && a2enmod tcpcrypt && systemctl restart apache2"

uninstall:
	-@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then \
	  systemctl disable --now tcpcryptd 2>/dev/null || true; \
	fi
	rm -f "$(DESTDIR)$(SBINDIR)/tcpcryptd" "$(DESTDIR)$(BINDIR)/tcpcrypt"
	rm -f "$(DESTDIR)$(LIBDIR)/libtcpcrypt.so" "$(DESTDIR)$(LIBDIR)/libtcpcrypt.so.0" \
	      "$(DESTDIR)$(LIBDIR)"/libtcpcrypt.so.[0-9]*.[0-9]*.[0-9]* \
	      "$(DESTDIR)$(LIBDIR)/libtcpcrypt.a" "$(DESTDIR)$(LIBDIR)/pkgconfig/tcpcrypt.pc"
	rm -f "$(DESTDIR)$(PREFIX)/include/tcpcrypt/tcpcrypt.h"
	rmdir "$(DESTDIR)$(PREFIX)/include/tcpcrypt" 2>/dev/null || true
	rm -f "$(DESTDIR)$(SYSTEMDUNITDIR)/tcpcryptd.service"
	for f in $(notdir $(DOCS)); do rm -f "$(DESTDIR)$(DOCDIR)/$$f"; done
	for f in $(notdir $(EXAMPLES)); do rm -f "$(DESTDIR)$(DOCDIR)/examples/$$f"; done
	rmdir "$(DESTDIR)$(DOCDIR)/examples" "$(DESTDIR)$(DOCDIR)" 2>/dev/null || true
	rm -f "$(DESTDIR)$(CONFDIR)/tcpcryptd.conf.dist"
ifeq ($(WITH_APACHE),yes)
	@if command -v "$(APXS)" >/dev/null 2>&1; then \
	  if [ -z "$(DESTDIR)" ] && [ -e "$$($(APXS) -q SYSCONFDIR)/mods-enabled/tcpcrypt.load" ] \
	     && command -v a2dismod >/dev/null 2>&1; then \
	    a2dismod -q tcpcrypt; \
	    echo "disabled the Apache module: restart apache2"; \
	  fi; \
	  rm -f "$(DESTDIR)$$($(APXS) -q LIBEXECDIR)/mod_tcpcrypt.so" \
	        "$(DESTDIR)$$($(APXS) -q SYSCONFDIR)/mods-available/tcpcrypt.load" \
	        "$(DESTDIR)$$($(APXS) -q INCLUDEDIR)/mod_tcpcrypt.h"; \
	  echo "kept $(DESTDIR)$$($(APXS) -q SYSCONFDIR)/mods-available/tcpcrypt.conf"; \
	else \
	  echo "make uninstall: $(APXS) not found; Apache module files left in place" >&2; \
	fi
endif
	-@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then ldconfig; fi
	@echo "kept $(DESTDIR)$(CONFDIR)/tcpcryptd.conf and the tcpcrypt group, if present"

test:
	bash scripts/test.sh

# tcpcryptd, libtcpcrypt0, libtcpcrypt-dev and libapache2-mod-tcpcrypt .debs
# (see dist/deb/README.md); reuses a release build already made.
deb:
	bash dist/deb/build.sh "$(CARGO_TARGET_DIR)/debian"

BENCH_ARGS ?=
bench:
	bash scripts/bench.sh $(BENCH_ARGS)

clean:
	$(CARGO) clean

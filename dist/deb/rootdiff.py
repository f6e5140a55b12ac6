#!/usr/bin/env python3
"""What changed in an overlay root between two moments, as seen through it.

  rootdiff.py record UPPER ROOT STATE   remember the state of every path the
                                        upper layer holds so far
  rootdiff.py compare UPPER ROOT STATE  print every path whose state now
                                        differs; exit 1 if any does

A path's state is what the merged root shows (absent, directory and mode,
symlink target, or file mode and SHA-256), compared with the recorded state
or, for a path the upper layer did not hold then, with the lower layer (this
machine's root). Copy-ups that changed nothing therefore do not count.
Paths of dpkg's own records, logs, caches, lock files and password-file
backups are not the packages' and are skipped, and so are Apache's module
state directories (not the state files in them).
"""

import hashlib
import json
import os
import stat
import sys

SKIP = (
    "tmp", "var/lib/dpkg", "var/log", "var/cache", "run/adduser", "run/systemd",
    "etc/.pwd.lock", "etc/ld.so.cache", "var/lib/systemd/deb-systemd-helper-enabled",
    "var/lib/systemd/deb-systemd-helper-masked",
)

# Directories Apache's a2enmod/a2dismod keep their per-module state in; they
# belong to apache2 and stay once made (the files in them are compared).
APACHE_STATE_DIRS = tuple(
    "var/lib/apache2/module/%s_by_%s" % (what, who)
    for what in ("enabled", "disabled")
    for who in ("admin", "maint")
)


def skipped(rel):
    if rel.endswith("-") and rel.startswith("etc/"):
        return True  # /etc/group- and friends: shadow utilities' backups
    return any(rel == s or rel.startswith(s + "/") for s in SKIP)


def state(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    mode = "%o" % stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return "symlink -> " + os.readlink(path)
    if stat.S_ISDIR(st.st_mode):
        return "directory " + mode
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return "file %s %s" % (mode, hashlib.sha256(f.read()).hexdigest())
    return "special " + mode


def upper_paths(upper):
    for top, dirs, files in os.walk(upper):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(top, name), upper)
            if not skipped(rel):
                yield rel


def main():
    action, upper, root, record = sys.argv[1:5]
    if action == "record":
        states = {p: state(os.path.join(root, p)) for p in upper_paths(upper)}
        with open(record, "w") as f:
            json.dump(states, f)
        return 0
    with open(record) as f:
        before = json.load(f)
    changed = []
    for p in sorted(set(upper_paths(upper)) | set(before)):
        was = before.get(p) or state(os.path.join("/", p))
        now = state(os.path.join(root, p))
        if p in APACHE_STATE_DIRS and {was, now} <= {"absent", "directory 755"}:
            continue
        if was != now:
            changed.append("/%s: %s -> %s" % (p, was, now))
    print("\n".join(changed))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Fail the image build when the image could not run as the user YMIR picks.
#
# YMIR runs the container as an arbitrary uid, often one without a passwd entry (root in the
# default deployment, a service account in hardened ones). Files a build step writes as root with
# a restrictive mode (a download through mkstemp is 0600, a cache directory can be 0700) work in
# every test that runs as root and break the first task that does not. This script, run as the
# last build step, lists every such path and exits 1:
#   - everything the executor reads at run time must be readable by others (directories also
#     searchable): the code, the templates, the start script, the baked weights and the
#     Python packages;
#   - HOME and the caches below it must be directories writable by everyone (mode 1777), and
#     the build must leave no file in them.
# Usage: check-permissions.sh [extra path to read ...]
set -euo pipefail

site_packages="$(python3 -c 'import sysconfig; print(" ".join(sorted({sysconfig.get_paths()[k] for k in ("purelib", "platlib")})))')"
read_paths=(/app /img-man /usr/bin/start.sh /etc/pip-constraints.txt "$@")
for path in $site_packages; do
    read_paths+=("$path")
done

problems=0
# report WHAT FOUND: FOUND is find's listing, one path a line; prints at most 20 of them.
report() {
    local what="$1" found="$2" count
    [ -n "$found" ] || return 0
    problems=1
    echo "error: $what:" >&2
    head -n 20 <<<"$found" | sed 's/^/  /' >&2
    count="$(wc -l <<<"$found")"
    if [ "$count" -gt 20 ]; then
        echo "  ... ($count in all)" >&2
    fi
}

existing=()
for path in "${read_paths[@]}"; do
    if [ -e "$path" ]; then
        existing+=("$path")
    else
        report "missing from the image" "$path"
    fi
done
report "not readable by other users (chmod a+rX them in the step that wrote them)" \
    "$(find "${existing[@]}" \( \( -type f ! -perm -o=r \) -o \( -type d ! -perm -o=rx \) \) \
        -printf '%M %u %p\n')"
report "directories under HOME that other users cannot write to (mode 1777 expected)" \
    "$(find "$HOME" -type d ! -perm -1777 -printf '%M %u %p\n')"
report "files a build step left under HOME (run such steps with a HOME of their own)" \
    "$(find "$HOME" -mindepth 1 ! -type d -printf '%M %u %p\n')"
report "/tmp is not writable by everyone" "$(find /tmp -maxdepth 0 ! -perm -1777 -printf '%M %u %p\n')"

if [ "$problems" -ne 0 ]; then
    echo "The image would fail for the arbitrary, non-root user YMIR runs it as." >&2
    exit 1
fi
echo "permissions: every run-time path is usable by any user"

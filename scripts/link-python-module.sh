#!/usr/bin/env bash
# Makes the Python module built in DIR (default build/python) importable by
# Debian's /usr/bin/python3 for this user: a bitinc.pth file in the user's
# site-packages names DIR (what `pip install -e` does). Rewritten only when
# it names another directory; remove it to undo.
set -euo pipefail
directory=$(realpath "${1:-build/python}")
[[ -f $directory/bitinc/__init__.py ]] || { echo "no Python module in $directory" >&2; exit 1; }
site=$(/usr/bin/python3 -c 'import site; print(site.getusersitepackages())')
mkdir -p "$site"
if [[ "$(cat "$site/bitinc.pth" 2>/dev/null || true)" != "$directory" ]]; then
    printf '%s\n' "$directory" > "$site/bitinc.pth.new"
    mv "$site/bitinc.pth.new" "$site/bitinc.pth"
    echo "python: /usr/bin/python3 imports bitinc from $directory ($site/bitinc.pth)"
fi

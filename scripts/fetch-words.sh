#!/usr/bin/env bash
# scripts/fetch-words.sh — makes sure Debian's wamerican word list (/usr/share/dict/american-english,
# cudl-charlm's data) is installed: apt-get installs the package when the file is missing.
# Usage: scripts/fetch-words.sh
set -euo pipefail
file=/usr/share/dict/american-english
if [[ -s $file ]]; then echo "fetch-words: $file is installed"; exit 0; fi
command -v apt-get >/dev/null || { echo "fetch-words: $file is missing and apt-get is not available; install wamerican" >&2; exit 1; }
sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq wamerican >/dev/null ||
  { "${sudo_cmd[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq wamerican >/dev/null; }
[[ -s $file ]] || { echo "fetch-words: wamerican installed but $file is missing" >&2; exit 1; }
echo "fetch-words: $file ($(wc -l < "$file") lines)"

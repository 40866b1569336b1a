# samples/common/cli_test_lib.sh — sourced by the samples' cli_test.sh scripts with their arguments
# (PROGRAM DATA_DIR): sets bin and data (absolute), fail=0, and moves into a temporary directory
# removed on exit. `expect CODE TEXT ARGS...` runs "$bin" ARGS, checks its exit status and that its
# output holds TEXT, leaves the output in $out and sets fail=1 on a mismatch.
bin=$(realpath "$1") data=$(realpath -m "$2")
fail=0
out=""
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

expect() {
  local code=$1 text=$2
  shift 2
  local rc name
  name=$(basename "$bin")
  out=$("$bin" "$@" 2>&1)
  rc=$?
  if [[ $rc -ne $code || $out != *"$text"* ]]; then
    echo "FAIL: $name $* -> exit $rc (want $code), output: $out (want: $text)"
    fail=1
  else
    echo "ok: $name $* -> exit $rc: $(grep -F -m1 -- "$text" <<<"$out")"
  fi
}

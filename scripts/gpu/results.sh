#!/usr/bin/env bash
# Keeps results/ (tens of MB of records and checkpoints) out of the tree the device tool sends, which must stay
# under 64 MiB with what a call carries. The tool sends tracked files and untracked files git does not ignore, so
# results/ must be untracked and ignored while GPU calls run:
#   bash scripts/gpu/results.sh hide   results/ out of the index, ignored; a pre-commit hook refuses any commit that
#                                      would delete results/ (commit a script then with `git commit -o PATH`)
#   bash scripts/gpu/results.sh show   results/ back in the index, the ignore line and the hook removed
# A path under results/ that a call needs (a checkpoint) goes in the call's carry list: ignored paths travel there.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
exclude=.git/info/exclude hook=.git/hooks/pre-commit
mkdir -p .git/hooks .git/info
case ${1:-} in
hide)
  git rm -r -q --cached results
  grep -qx '/results/' "$exclude" 2>/dev/null || echo '/results/' >> "$exclude"
  cat > "$hook" <<'HOOK'
#!/usr/bin/env bash
# installed by scripts/gpu/results.sh hide
if git diff --cached --diff-filter=D --name-only | grep -q '^results/'; then
  echo "pre-commit: results/ is hidden for GPU calls (scripts/gpu/results.sh); this commit would delete it." >&2
  echo "Commit only your paths (git commit -o PATH ...) or run scripts/gpu/results.sh show first." >&2
  exit 1
fi
HOOK
  chmod +x "$hook"
  echo "results/ hidden from the device tool's tree" ;;
show)
  git reset -q -- results
  sed -i '\#^/results/$#d' "$exclude"
  if grep -q 'scripts/gpu/results.sh' "$hook" 2>/dev/null; then rm -f "$hook"; fi
  echo "results/ tracked again" ;;
*)
  echo "usage: bash scripts/gpu/results.sh hide|show" >&2; exit 2 ;;
esac

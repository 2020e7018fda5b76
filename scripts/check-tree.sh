#!/bin/sh
# Checks of the repository itself, for CI (.ci/run):
#
#   scripts/check-tree.sh files   fails when a tracked file is a build
#                                 output (an ELF file, an ar archive, an
#                                 object or library by its name, anything
#                                 under build*/) or binary (holds a NUL
#                                 byte) outside the places where binary
#                                 files belong: pictures (*.png) and the
#                                 fuzz corpus (fuzz/corpus/).
#   scripts/check-tree.sh clean   fails when the work tree differs from
#                                 the last commit (git status --porcelain
#                                 not empty): run after make test, which
#                                 must write only under ignored paths.
#
# Prints what it found; exit status 0 when nothing.
set -eu
cd "$(dirname "$0")/.."

# What a file starts with, as hex (the first 8 bytes).
magic() { od -An -tx1 -N8 "$1" 2>/dev/null | tr -d ' \n'; }

check_files() {
	bad=0
	tmp=$(mktemp)
	git ls-files -z > "$tmp"
	while IFS= read -r f; do
		[ -f "$f" ] || continue
		why=""
		case "$f" in
		build*/* | */build/*) why="under a build directory" ;;
		*.o | *.obj | *.a | *.so | *.so.* | *.dylib | *.dll | *.exe)
			why="a build output by its name" ;;
		esac
		if [ -z "$why" ]; then
			case "$(magic "$f")" in
			7f454c46*) why="an ELF file" ;;
			213c617263683e0a*) why="an ar archive" ;;
			cffaedfe* | cefaedfe* | feedface* | feedfacf*) why="a Mach-O file" ;;
			esac
		fi
		if [ -z "$why" ] && tr -d '\000' < "$f" | cmp -s - "$f"; then
			: # no NUL byte: text
		elif [ -z "$why" ]; then
			case "$f" in
			*.png | fuzz/corpus/*) ;;
			*) why="a binary file (a NUL byte)" ;;
			esac
		fi
		if [ -n "$why" ]; then
			echo "tracked file $f: $why"
			bad=$((bad + 1))
		fi
	done <<EOF
$(tr '\000' '\n' < "$tmp")
EOF
	rm -f "$tmp"
	if [ "$bad" -gt 0 ]; then
		echo "check-tree: $bad tracked file(s) that belong in no commit" \
		     "(remove them with git rm; .gitignore lists build outputs)"
		return 1
	fi
	echo "check-tree: no binary or build output among $(git ls-files | wc -l) tracked files"
}

check_clean() {
	st=$(git status --porcelain --untracked-files=all)
	if [ -n "$st" ]; then
		echo "$st"
		echo "check-tree: the work tree differs from the last commit: a" \
		     "step wrote outside the ignored paths (build/, test/out/)"
		return 1
	fi
	echo "check-tree: the work tree is clean"
}

case "${1:-}" in
files) check_files ;;
clean) check_clean ;;
*) echo "usage: $0 files|clean" >&2; exit 2 ;;
esac

#!/usr/bin/env python3
"""Lists functions in src/ longer than 80 lines that carry no comment saying why.

A long function is accepted when a comment just above it (its doc comment or a `//` line)
contains "long because". Exit 1 when any other function is over the limit.
Usage: scripts/lib/fnlen.py [src-dir] [--limit N]
"""
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def body_length(lines, start):
    """Lines from the signature to the closing brace of the body (None for a declaration)."""
    depth, opened = 0, False
    for i in range(start, len(lines)):
        code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[i])
        code = re.sub(r"'(\\.|[^'\\])'", "''", code)
        code = code.split("//", 1)[0]
        for ch in code:
            if ch == "{":
                depth += 1
                opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return i - start + 1
        if not opened and code.rstrip().endswith(";"):
            return None
    return None


def justified(lines, start):
    i = start - 1
    while i >= 0 and (lines[i].strip().startswith(("//", "#[")) or lines[i].strip() == ""):
        if "long because" in lines[i].lower():
            return True
        if lines[i].strip() == "":
            break
        i -= 1
    return False


def main():
    args = sys.argv[1:]
    limit = 80
    if "--limit" in args:
        k = args.index("--limit")
        limit = int(args[k + 1])
        del args[k : k + 2]
    root = pathlib.Path(args[0] if args else "src")
    bad = []
    for path in sorted(root.rglob("*.rs")):
        lines = path.read_text().splitlines()
        in_tests = False
        for n, line in enumerate(lines):
            if re.match(r"^\s*#\[cfg\(test\)\]", line):
                in_tests = True  # unit tests at the end of a file are exempt
            m = FN.match(line)
            if not m or in_tests:
                continue
            length = body_length(lines, n)
            if length and length > limit and not justified(lines, n):
                bad.append(f"{path}:{n + 1}: fn {m.group(7)} is {length} lines")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} function(s) over {limit} lines without a comment saying why (add one containing 'long because', or split it)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

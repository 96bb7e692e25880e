#!/usr/bin/env python3
"""Import circles between the crate's modules.

Reads src/**/*.rs, maps each file to its module path (src/archive/manifest.rs is
`archive::manifest`, src/config/mod.rs is `config`, src/lib.rs is the crate root), collects the
paths each file names through `crate::`, `super::` and `self::` (in `use` trees and inline), and
builds two graphs: one between top-level modules (`config`, `policy`, ...) and one between files.
Every strongly connected component of more than one module is a circle; the script prints it
with a shortest cycle through each member and, for each step, the line that makes it.

At file granularity a file's references to its own ancestors (`super::FileEntry` from
`archive::manifest` to `archive`) and an ancestor's to its descendants (`pub use
manifest::SnapshotSummary` in `archive`) are a module and its facade, not two components: they
are left out of the file graph, while the top-level graph keeps every reference.

Usage: modcycles.py [--src DIR] [--report] [--allow A,B,...]...
  exit 1 when a circle is found, unless --report (print only) or every member of that circle
  is named in one --allow list (a known circle: printed as such, not failing).
"""

import argparse
import os
import re
import sys
from collections import defaultdict, deque

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """The text with comments, string and char literals blanked (newlines kept for lines)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not (i and re.match(r"\w", text[i - 1])):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F}'), not a lifetime ('a).
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def file_module(rel):
    """`archive/manifest.rs` -> ('archive', 'manifest'); `lib.rs` -> ()."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}, self}` -> [a::b, a::c::d, a::c::e, a]."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)  # renames do not change the target
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        # Split s at top-level commas.
        depth, start, items = 0, 0, []
        for k, ch in enumerate(s):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                items.append(s[start:k])
                start = k + 1
        items.append(s[start:])
        for item in items:
            if not item:
                continue
            brace = item.find("{")
            if brace >= 0 and item.endswith("}"):
                head = item[:brace].rstrip(":")
                head = [p for p in head.split("::") if p]
                walk(prefix + head, item[brace + 1:-1])
            else:
                segs = [p for p in item.split("::") if p]
                if segs == ["self"]:
                    segs = []
                results.append(prefix + segs)

    walk([], tree)
    return results


def resolve(segs, current, modules):
    """The module a path names, as the longest known module prefix; None if outside the crate."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base, rest = tuple(current), list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    elif tuple(current) + (segs[0],) in modules:
        base, rest = tuple(current), segs  # a child module named without `self::`
    else:
        return None
    best = base if base in modules else None
    path = base
    for s in rest:
        path = path + (s,)
        if path in modules:
            best = path
        else:
            break
    return best


USE_RE = re.compile(r"\buse\s+([^;]+);")
PATH_RE = re.compile(r"\b((?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)")
MOD_OPEN_RE = re.compile(r"\bmod\s+(" + IDENT + r")\s*\{")


def references(text, file_mod, modules):
    """(line, target module) for each path in the file that names a module of the crate."""
    clean = strip_comments_and_strings(text)
    line_of = lambda pos: clean.count("\n", 0, pos) + 1  # noqa: E731
    # Inline modules (`mod tests { ... }`): the module path at each offset.
    scopes = []  # (start, end, name)
    for m in MOD_OPEN_RE.finditer(clean):
        depth, j = 1, m.end()
        while j < len(clean) and depth:
            depth += {"{": 1, "}": -1}.get(clean[j], 0)
            j += 1
        scopes.append((m.end(), j, m.group(1)))

    def module_at(pos):
        inner = [s for s in scopes if s[0] <= pos < s[1]]
        inner.sort()
        return list(file_mod) + [s[2] for s in inner]

    found = []
    used_spans = []
    for m in USE_RE.finditer(clean):
        used_spans.append((m.start(), m.end()))
        cur = module_at(m.start())
        for segs in expand_use_tree(m.group(1)):
            target = resolve(segs, cur, modules)
            if target is not None:
                found.append((line_of(m.start()), target))
    for m in PATH_RE.finditer(clean):
        if any(a <= m.start() < b for a, b in used_spans):
            continue
        segs = [s.strip() for s in m.group(1).split("::")]
        target = resolve(segs, module_at(m.start()), modules)
        if target is not None:
            found.append((line_of(m.start()), target))
    return found


def scan(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                rel = os.path.relpath(os.path.join(root, name), src).replace(os.sep, "/")
                if rel == "main.rs" or rel.startswith("bin/"):
                    continue  # binaries reach the library by its crate name, as users do
                files[file_module(rel)] = rel
    modules = set(files)
    refs = []  # (from module, to module, file, line)
    for mod, rel in sorted(files.items()):
        with open(os.path.join(src, rel), encoding="utf-8") as f:
            text = f.read()
        for line, target in references(text, mod, modules):
            refs.append((mod, target, rel, line))
    return files, refs


def name(mod):
    return "::".join(mod) if mod else "crate"


def top(mod):
    return mod[:1]


def is_lineage(a, b):
    """One module is the other or an ancestor of it."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return long_[: len(short)] == short


def build(refs, granularity):
    graph = defaultdict(dict)  # node -> {node: (file, line)}
    for a, b, rel, line in refs:
        if granularity == "top":
            a, b = top(a), top(b)
            if a == b or not a or not b:
                continue
        else:
            if is_lineage(a, b):
                continue
        graph[a].setdefault(b, (rel, line))
        graph[b]
    return graph


def sccs(graph):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def shortest_cycle(graph, start, members):
    """The shortest path start -> ... -> start inside the component."""
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return None


def canonical(cycle):
    ring = cycle[:-1]
    k = ring.index(min(ring))
    return tuple(ring[k:] + ring[:k])


def report(graph, allow, label):
    """Prints each circle; returns how many are not allowed."""
    failing = 0
    for comp in sccs(graph):
        names = {name(m) for m in comp}
        known = any(names <= a for a in allow)
        failing += 0 if known else 1
        print(f"{label} circle{' (allowed)' if known else ''}: {' <-> '.join(sorted(names))}")
        seen = set()
        members = set(comp)
        for m in comp:
            cyc = shortest_cycle(graph, m, members)
            if not cyc or canonical(cyc) in seen:
                continue
            seen.add(canonical(cyc))
            print("  " + " -> ".join(name(x) for x in cyc))
            for a, b in zip(cyc, cyc[1:]):
                rel, line = graph[a][b]
                print(f"      {name(a)} -> {name(b)}: src/{rel}:{line}")
    return failing


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default=os.path.join(here, "..", "..", "src"))
    p.add_argument("--report", action="store_true", help="print every circle, exit 0")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="A,B,...",
        help="a known circle: one among only these modules does not fail",
    )
    args = p.parse_args(argv)
    allow = [set(a.split(",")) for a in args.allow]
    _, refs = scan(os.path.normpath(args.src))
    failing = report(build(refs, "top"), allow, "top-level")
    failing += report(build(refs, "file"), allow, "file")
    if failing == 0:
        print("no import circles" + (" outside the allowed ones" if allow else ""))
    return 0 if args.report or failing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

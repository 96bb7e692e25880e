#!/usr/bin/env python3
"""Tests of modcycles.py on small made-up crates: python3 scripts/lib/test_modcycles.py"""

import io
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import modcycles  # noqa: E402


def crate(files):
    d = tempfile.mkdtemp()
    for rel, text in files.items():
        path = os.path.join(d, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return d


def run(files, *args):
    out = io.StringIO()
    with redirect_stdout(out):
        rc = modcycles.main(["--src", crate(files), *args])
    return rc, out.getvalue()


class ModCycles(unittest.TestCase):
    def test_use_trees_and_inline_paths_make_a_circle(self):
        rc, out = run({
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a/mod.rs": "pub mod x;\n",
            "a/x.rs": "use crate::{b::{self, Thing as T}, other};\n",
            "b.rs": "fn f() { let _ = crate::a::x::g(); }\n",
        })
        self.assertEqual(rc, 1)
        self.assertIn("top-level circle: a <-> b", out)
        self.assertIn("file circle: a::x <-> b", out)
        self.assertIn("src/b.rs:1", out)

    def test_comments_strings_and_test_modules_resolve_right(self):
        rc, out = run({
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "// crate::b::X\nconst S: &str = \"crate::b::Y\";\n"
                    "#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
            "b.rs": "use crate::a::Z;\n",
        })
        self.assertEqual(rc, 0, out)
        self.assertIn("no import circles", out)

    def test_super_paths_climb_and_a_facade_is_no_circle(self):
        files = {
            "lib.rs": "pub mod p;\npub mod q;\n",
            "p/mod.rs": "pub mod r;\npub use r::R;\n",
            "p/r.rs": "use super::P;\nfn f() { super::super::q::h(); }\n",
            "q.rs": "",
        }
        rc, out = run(files)
        self.assertEqual(rc, 0, out)
        files["q.rs"] = "use crate::p::r::R;\n"
        rc, out = run(files)
        self.assertEqual(rc, 1)
        self.assertIn("p::r -> q: src/p/r.rs:2", out)

    def test_allowed_circles_are_shown_but_do_not_fail(self):
        files = {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::X;\n",
            "b.rs": "use crate::a::Y;\n",
        }
        rc, out = run(files, "--allow", "a,b")
        self.assertEqual(rc, 0)
        self.assertIn("circle (allowed): a <-> b", out)
        rc, out = run(files, "--report")
        self.assertEqual(rc, 0)
        self.assertIn("top-level circle: a <-> b", out)


if __name__ == "__main__":
    unittest.main()

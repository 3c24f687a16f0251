#!/usr/bin/env python3
"""Code lines of Rust files, as the issues count them: not blank, not a comment line (// or
/* */), not in a #[cfg(test)] item (a test module, a test-only function or `mod x;`), and
not in a file named *tests.rs.

    benches/code-lines.py plugins/gridengine/src/*.rs
"""
import sys
total = 0
for path in sys.argv[1:]:
    if path.endswith("tests.rs"):
        continue
    n, skip_depth, pending_test, in_block = 0, None, False, False
    depth = 0
    for raw in open(path):
        line = raw.strip()
        if in_block:
            in_block = "*/" not in line
            continue
        if line.startswith("/*"):
            in_block = "*/" not in line
            continue
        if not line or line.startswith("//"):
            continue
        if skip_depth is None and line.startswith("#[cfg(test)]"):
            pending_test = True
            continue
        opens, closes = line.count("{"), line.count("}")
        if pending_test:
            # the item after #[cfg(test)]: skipped to its end (a `mod x;` line is one line)
            pending_test = False
            if opens > closes:
                skip_depth = depth
                depth += opens - closes
            continue
        depth += opens - closes
        if skip_depth is not None:
            if depth <= skip_depth:
                skip_depth = None
            continue
        n += 1
    print(f"{n:5} {path}")
    total += n
print(f"{total:5} total")

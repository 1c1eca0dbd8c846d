#!/usr/bin/env python3
"""Fails when an entity of include/asyncify.h has no documentation.

The rule is the one Doxygen applies with EXTRACT_ALL = NO and
WARN_IF_UNDOCUMENTED = YES: the file has a @file block, and every macro,
typedef, struct, struct field and function has a doc comment (`/** */`,
`/*! */`, `///` or `//!` before it, or a trailing `/**< */` / `///<` after a
field or macro on its line) with some text in it. Plain `/* */` comments do
not count: Doxygen ignores them. As Doxygen's WARN_IF_INCOMPLETE_DOC and
WARN_IF_DOC_ERROR do, it also fails when a function documents some of its
parameters with @param but not all, names a parameter it does not have,
documents one parameter or @retval value twice, or documents a return value
of a void function.

Usage: check_header_docs.py [HEADER]   (default: include/asyncify.h)

Before checking HEADER it checks itself: copies of HEADER with one doc
comment removed (the @file block, a macro's, a typedef's, a struct's, a
field's, a function's) must each be reported, so the check cannot pass by
finding nothing. Plain Python 3.9, no dependencies. Exit status 0 when every
entity is documented, 1 otherwise (each undocumented entity is listed as
FILE:LINE: what), 2 when the self-check fails.
"""

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

HEADER = Path(__file__).resolve().parent.parent / "include" / "asyncify.h"

IDENT = re.compile(r"[A-Za-z_]\w*")
C_WORDS = {"const", "volatile", "struct", "union", "enum", "unsigned", "signed", "restrict"}


@dataclass
class Doc:
    text: str  # the comment's words, markers stripped
    line: int
    trailing: bool  # `/**<` or `///<`: documents what precedes it
    start: int  # offsets of the comment in the header text
    end: int


@dataclass
class Entity:
    kind: str  # "macro", "typedef", "struct", "field", "function", "variable"
    name: str
    line: int
    doc: Optional[Doc] = None
    params: List[str] = field(default_factory=list)
    returns_void: bool = False

    def label(self) -> str:
        return f"{self.kind} {self.name}"


def doc_words(body: str) -> str:
    """The text of a doc comment's body without the leading `*` of each line."""
    lines = [re.sub(r"^\s*\*?", "", line) for line in body.splitlines()]
    return "\n".join(lines).strip()


def tokens(text: str):
    """Yields ("doc", Doc), ("pp", directive, line) and ("code", text, line,
    end char) tokens; plain comments and string contents never end a
    statement."""
    i, n, line = 0, len(text), 1
    code, code_line = [], None
    at_line_start = True

    def flush(end_char):
        nonlocal code, code_line
        chunk = "".join(code).strip()
        start = code_line
        code, code_line = [], None
        return ("code", chunk, start or line, end_char)

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            at_line_start = True
            code.append(" ")
            i += 1
            continue
        if c in " \t\r":
            if code:
                code.append(" ")
            i += 1
            continue
        if at_line_start and c == "#":
            j = i
            while True:
                k = text.find("\n", j)
                k = n if k < 0 else k
                if k > i and text[k - 1] == "\\":
                    j = k + 1
                    continue
                break
            directive = text[i:k]
            yield ("pp", directive.replace("\\\n", " "), line)
            line += directive.count("\n")
            i = k
            continue
        at_line_start = False
        if text.startswith("/*", i):
            k = text.find("*/", i + 2)
            if k < 0:
                raise SystemExit(f"line {line}: unterminated comment")
            body = text[i + 2 : k]
            is_doc = (body.startswith("*") and not body.startswith("**") and body != "*") or body.startswith("!")
            if is_doc:
                inner = body[1:]
                trailing = inner.startswith("<")
                yield ("doc", Doc(doc_words(inner[1:] if trailing else inner), line, trailing, i, k + 2))
            line += body.count("\n")
            i = k + 2
            continue
        if text.startswith("//", i):
            k = text.find("\n", i)
            k = n if k < 0 else k
            body = text[i + 2 : k]
            if body.startswith("/") and not body.startswith("//") or body.startswith("!"):
                inner = body[1:]
                trailing = inner.startswith("<")
                yield ("doc", Doc(doc_words(inner[1:] if trailing else inner), line, trailing, i, k))
            i = k
            continue
        if c in "\"'":
            k = i + 1
            while k < n and text[k] != c:
                k += 2 if text[k] == "\\" else 1
            if code_line is None:
                code_line = line
            code.append(text[i : k + 1])
            i = k + 1
            continue
        if c in ";{}":
            if c == "}":
                if "".join(code).strip():
                    yield flush(";")
                yield ("code", "", line, "}")
            else:
                yield flush(c)
            i += 1
            continue
        if code_line is None:
            code_line = line
        code.append(c)
        i += 1


def split_params(inside: str) -> List[str]:
    """The names of a parameter list's parameters (none for `(void)`)."""
    parts, depth, cur = [], 0, []
    for ch in inside:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    names = []
    for part in parts:
        part = part.strip()
        if not part or part == "void" or part == "...":
            continue
        m = re.search(r"\(\s*\*\s*(\w+)\s*\)", part)  # a function pointer parameter
        if m:
            names.append(m.group(1))
            continue
        words = [w for w in IDENT.findall(re.sub(r"\[.*?\]", "", part)) if w not in C_WORDS]
        if len(words) >= 2:
            names.append(words[-1])
    return names


def declared_name(decl: str) -> Optional[str]:
    """The name a declaration (typedef, field, variable) declares."""
    m = re.search(r"\(\s*\*\s*(\w+)\s*\)\s*\(", decl)
    if m:
        return m.group(1)
    words = IDENT.findall(re.sub(r"\[.*?\]", "", decl))
    return words[-1] if words else None


def parse(text: str):
    """The documentable entities of a header and its @file doc, if any."""
    entities: List[Entity] = []
    file_doc: Optional[Doc] = None
    pending: Optional[Doc] = None
    blocks = []  # "extern", "other" or the Entity of a struct being read
    last_ifndef = None
    last_entity: Optional[Entity] = None
    after_struct: Optional[Entity] = None  # `} name;` ends a typedef struct

    def add(entity: Entity):
        nonlocal pending, last_entity
        entity.doc = pending
        pending = None
        entities.append(entity)
        last_entity = entity
        return entity

    for tok in tokens(text):
        kind = tok[0]
        if kind == "doc":
            doc = tok[1]
            if re.search(r"[@\\]file\b", doc.text):
                file_doc = doc
                continue
            if doc.trailing:
                if last_entity is not None and last_entity.doc is None and doc.line == last_entity.line:
                    last_entity.doc = doc
                continue
            line_doc = text.startswith("//", doc.start)
            if (
                pending is not None
                and line_doc
                and text.startswith("//", pending.start)
                and not text[pending.end : doc.start].strip()
            ):
                # Consecutive `///` lines are one comment.
                doc = Doc(pending.text + "\n" + doc.text, pending.line, False, pending.start, doc.end)
            pending = doc
            continue
        if kind == "pp":
            directive, line = tok[1], tok[2]
            m = re.match(r"#\s*(\w+)\s*(\w*)", directive)
            word, name = (m.group(1), m.group(2)) if m else ("", "")
            if word == "ifndef":
                last_ifndef = name
                continue
            if word == "define":
                if name and name != last_ifndef:  # not the include guard
                    add(Entity("macro", name, line))
                last_ifndef = None
                pending = None
                continue
            if word == "include":
                pending = None
            last_ifndef = None
            continue
        _, chunk, line, end = tok
        if end == "{":
            m = re.match(r"(?:typedef\s+)?(struct|union|enum)\s+(\w+)\s*$", chunk)
            if re.match(r'extern\s+"C(\+\+)?"\s*$', chunk):
                blocks.append("extern")
            elif m:
                blocks.append(add(Entity("struct" if m.group(1) != "enum" else "enum", m.group(2), line)))
            else:
                blocks.append("other")
                pending = None
            continue
        if end == "}":
            closed = blocks.pop() if blocks else None
            after_struct = closed if isinstance(closed, Entity) else None
            pending = None
            continue
        # A statement ending in `;`.
        if not chunk:
            after_struct = None
            continue
        inside = blocks[-1] if blocks else None
        if after_struct is not None:
            # `typedef struct X { ... } X;`: the typedef is the struct's.
            name = declared_name(chunk)
            if name and name != after_struct.name:
                entity = add(Entity("typedef", name, line))
                entity.doc = entity.doc or after_struct.doc
            after_struct = None
            pending = None
            continue
        if isinstance(inside, Entity):
            if inside.kind == "enum":
                pending = None
                continue
            name = declared_name(chunk)
            if name:
                add(Entity("field", f"{inside.name}.{name}", line))
            continue
        if inside == "other":
            pending = None
            continue
        if chunk.startswith("typedef"):
            name = declared_name(chunk)
            if name:
                add(Entity("typedef", name, line))
            continue
        m = re.match(r"(.*?)\b(\w+)\s*\((.*)\)\s*$", chunk, re.S)
        if m and not re.search(r"\(\s*\*", chunk[: m.start(3)]):
            ret = m.group(1).strip()
            if ret.startswith("extern "):
                ret = ret[len("extern ") :]
            entity = add(Entity("function", m.group(2), line))
            entity.params = split_params(m.group(3))
            entity.returns_void = re.fullmatch(r"(?:static\s+|inline\s+)*void", ret) is not None
            continue
        name = declared_name(chunk)
        if name:
            add(Entity("variable", name, line))
    return entities, file_doc


PARAM = re.compile(r"[@\\]param(?:\[[^\]]*\])?\s+(\w+(?:\s*,\s*\w+)*)")
RETVAL = re.compile(r"[@\\]retval\s+(\w+)")
RETURN = re.compile(r"[@\\](?:return|returns|result|retval)\b")


def problems(text: str, path: str) -> List[str]:
    entities, file_doc = parse(text)
    found = []
    if file_doc is None:
        found.append(f"{path}:1: no @file block (Doxygen documents nothing of the file without one)")
    for e in entities:
        where = f"{path}:{e.line}: {e.label()}"
        if e.doc is None or not re.sub(r"[@\\]\w+(\[[^\]]*\])?", "", e.doc.text).strip():
            found.append(f"{where} has no documentation")
            continue
        if e.kind != "function":
            continue
        named = [n.strip() for group in PARAM.findall(e.doc.text) for n in group.split(",")]
        for command, names in (("@param", named), ("@retval", RETVAL.findall(e.doc.text))):
            for name in sorted({n for n in names if names.count(n) > 1}):
                found.append(f"{where}: two {command} {name} entries (Doxygen: multiple documentation sections)")
        for name in named:
            if name not in e.params:
                found.append(f"{where}: @param {name} names no parameter of it")
        if named:
            for name in e.params:
                if name not in named:
                    found.append(f"{where}: parameter {name} has no @param while others have one")
        if e.returns_void and RETURN.search(e.doc.text):
            found.append(f"{where}: documents a return value but returns void")
    return found


def self_check(text: str) -> List[str]:
    """Removes one doc comment of each kind of entity and expects a report."""
    entities, file_doc = parse(text)
    failures = []
    samples = {}
    for e in entities:
        if e.doc is not None and e.kind not in samples:
            samples[e.kind] = e
    cases = [(f"{e.label()}", e.doc, e.name) for e in samples.values()]
    if file_doc is not None:
        cases.append(("the @file block", file_doc, "@file"))
    for label, doc, name in cases:
        copy = text[: doc.start] + text[doc.end :]
        if not any((name in p or "@file" in p) and ("no documentation" in p or "no @file" in p) for p in problems(copy, "copy")):
            failures.append(f"removing the doc comment of {label} was not reported")
    for kind in ("macro", "typedef", "struct", "field", "function"):
        if kind not in samples:
            failures.append(f"found no documented {kind} to remove: is the header parsed at all?")
    return failures


def main(argv: List[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else HEADER
    text = path.read_text(encoding="utf-8")
    failures = self_check(text)
    if failures:
        for f in failures:
            print(f"check_header_docs self-check: {f}", file=sys.stderr)
        return 2
    found = problems(text, str(path))
    for p in found:
        print(p, file=sys.stderr)
    entities, _ = parse(text)
    counts = {}
    for e in entities:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    summary = ", ".join(f"{n} {k}s" for k, n in sorted(counts.items()))
    if found:
        print(f"{path}: {len(found)} documentation problem(s) among {summary}", file=sys.stderr)
        return 1
    print(f"{path}: every entity is documented ({summary}, and the @file block)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

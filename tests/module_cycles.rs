//! No module imports one that imports it back, directly or around a loop.
//!
//! Every file under src/ is read; every `crate::…`, `super::…` and `self::…` path outside
//! comments and string literals (including each branch of a `use a::{b, c::{d}}` tree) is
//! resolved to the longest module file it names. Two graphs must be acyclic:
//! - top-level modules, a module and its descendants collapsed into one node (`service`
//!   and `service::hub` are both `service`);
//! - files, ignoring edges from a module to its own descendants (a parent declaring and
//!   re-exporting its children is not a cycle).
//!
//! The library (src/lib.rs) and the binary (src/main.rs with src/cli/) are separate crates
//! with separate `crate::` roots, so they are checked separately.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path, e.g. `["pipeline", "config"]`; the crate root is empty.
type ModPath = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Tokens of `source` with comments, string, byte-string and char literals removed, so that
/// `// see crate::x` or `"crate::x"` is not an import.
fn tokens(source: &str) -> Vec<Token> {
    let s: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&s, i + 1);
        } else if (c == 'r' || c == 'b') && raw_string_start(&s, i).is_some() {
            let (hashes, body) = raw_string_start(&s, i).unwrap_or((0, i));
            i = skip_raw_string(&s, body, hashes);
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&s, i + 2);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                // Past the quote, the backslash and the escaped character (which may be `'`).
                i += 3;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if s.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(s[start..i].iter().collect()));
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    out
}

/// Index just past the closing quote of a string whose body starts at `i`.
fn skip_string(s: &[char], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// For `r"`, `r#"`, `br"`… at `i`: the number of `#` and the index of the body.
fn raw_string_start(s: &[char], i: usize) -> Option<(usize, usize)> {
    // Only at the start of a token: `for"` is not a raw string.
    if i > 0 && (s[i - 1].is_alphanumeric() || s[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if s[j] == 'b' {
        j += 1;
    }
    if s.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while s.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (s.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

fn skip_raw_string(s: &[char], mut i: usize, hashes: usize) -> usize {
    while i < s.len() {
        if s[i] == '"' && (0..hashes).all(|k| s.get(i + 1 + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// Every path in `tokens` that starts with `crate`, `super` or `self` followed by `::`,
/// made absolute from `module` (the file's module; inline `mod x { … }` blocks are followed
/// so that `super::` inside `mod tests` means the file's own module).
fn absolute_paths(tokens: &[Token], module: &ModPath) -> Vec<ModPath> {
    let mut paths = Vec::new();
    // (inline module name, brace depth at which it was opened)
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Punct('{'))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Token::Ident(first)
                if (first == "crate" || first == "super" || first == "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    // `a::self::b` does not occur; `x::crate` cannot.
                    && !(i > 0 && tokens[i - 1] == Token::PathSep) =>
            {
                let mut here: ModPath = module.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut prefix: ModPath = Vec::new();
                let mut j = i;
                // Leading crate / self / super (super may repeat).
                match first.as_str() {
                    "crate" => j += 1,
                    "self" => {
                        prefix = here.clone();
                        j += 1;
                    }
                    _ => {
                        prefix = here.clone();
                        while let Some(Token::Ident(w)) = tokens.get(j) {
                            if w != "super" {
                                break;
                            }
                            prefix.pop();
                            j += 1;
                            if tokens.get(j) == Some(&Token::PathSep)
                                && tokens.get(j + 1) == Some(&Token::Ident("super".into()))
                            {
                                j += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                let end = parse_tree(tokens, j, prefix, &mut paths);
                i = end.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Parse `(:: ident)* (:: { tree, … } | :: *)?` from `i`, pushing every complete path.
/// Returns the index after the tree.
fn parse_tree(
    tokens: &[Token],
    mut i: usize,
    mut prefix: ModPath,
    out: &mut Vec<ModPath>,
) -> usize {
    loop {
        if tokens.get(i) != Some(&Token::PathSep) {
            break;
        }
        match tokens.get(i + 1) {
            Some(Token::Ident(name)) => {
                prefix.push(name.clone());
                i += 2;
            }
            Some(Token::Punct('{')) => {
                i += 2;
                loop {
                    match tokens.get(i) {
                        Some(Token::Punct('}')) | None => return i + 1,
                        Some(Token::Punct(',')) => i += 1,
                        Some(Token::Ident(name)) if name == "self" => {
                            out.push(prefix.clone());
                            i += 1;
                        }
                        Some(Token::Ident(name)) => {
                            let mut branch = prefix.clone();
                            branch.push(name.clone());
                            i = parse_tree(tokens, i + 1, branch, out);
                        }
                        Some(Token::Punct('*')) => {
                            out.push(prefix.clone());
                            i += 1;
                        }
                        // `as name`, generics after a path and the like: skip.
                        Some(_) => i += 1,
                    }
                }
            }
            Some(Token::Punct('*')) => {
                i += 2;
                break;
            }
            _ => {
                // `::<T>`: the path so far is what is named.
                i += 1;
                break;
            }
        }
    }
    out.push(prefix);
    i
}

/// The module of a source file relative to its crate's directory.
fn module_of(relative: &Path) -> ModPath {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.last_mut() {
        *last = last.trim_end_matches(".rs").to_owned();
    }
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

struct Crate {
    name: &'static str,
    /// Module → the modules it names (resolved, without itself).
    edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

/// Longest module in `modules` that `path` starts with.
fn resolve(path: &ModPath, modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

fn load_crate(name: &'static str, files: &[(PathBuf, ModPath)]) -> Crate {
    let modules: BTreeSet<ModPath> = files.iter().map(|(_, m)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    for (path, module) in files {
        let source = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let targets: BTreeSet<ModPath> = absolute_paths(&tokens(&source), module)
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|t| t != module)
            .collect();
        edges.insert(module.clone(), targets);
    }
    Crate { name, edges }
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components with more than one node (Tarjan), each sorted.
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        next: usize,
        found: Vec<Vec<ModPath>>,
    }
    fn visit(v: &ModPath, st: &mut State<'_>) {
        st.index.insert(v.clone(), st.next);
        st.low.insert(v.clone(), st.next);
        st.next += 1;
        st.stack.push(v.clone());
        st.on_stack.insert(v.clone());
        let targets: Vec<ModPath> = st
            .edges
            .get(v)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        for w in targets {
            if !st.index.contains_key(&w) {
                visit(&w, st);
                let low = st.low[v].min(st.low[&w]);
                st.low.insert(v.clone(), low);
            } else if st.on_stack.contains(&w) {
                let low = st.low[v].min(st.index[&w]);
                st.low.insert(v.clone(), low);
            }
        }
        if st.low[v] == st.index[v] {
            let mut component = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                st.found.push(component);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v) {
            visit(v, &mut st);
        }
    }
    st.found
}

/// A readable report of each cycle: its modules and the imports between them.
fn describe(found: &[Vec<ModPath>], edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> String {
    let mut text = String::new();
    for component in found {
        let members: BTreeSet<&ModPath> = component.iter().collect();
        text.push_str(&format!(
            "\n  cycle: {}\n",
            component.iter().map(show).collect::<Vec<_>>().join(", ")
        ));
        for from in component {
            for to in edges[from].iter().filter(|t| members.contains(t)) {
                text.push_str(&format!("    {} imports {}\n", show(from), show(to)));
            }
        }
    }
    text
}

fn is_descendant(m: &ModPath, of: &ModPath) -> bool {
    m.len() > of.len() && m.starts_with(of)
}

fn top_level(krate: &Crate) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (from, targets) in &krate.edges {
        let Some(top) = from.first() else { continue };
        let entry = graph.entry(vec![top.clone()]).or_default();
        for to in targets {
            // The crate root re-exports (`crate::Result`) are not a module of their own.
            if let Some(t) = to.first().filter(|t| *t != top) {
                entry.insert(vec![t.clone()]);
            }
        }
    }
    graph
}

fn file_level(krate: &Crate) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    krate
        .edges
        .iter()
        .map(|(from, targets)| {
            let kept = targets
                .iter()
                .filter(|to| !is_descendant(to, from) && !to.is_empty())
                .cloned()
                .collect();
            (from.clone(), kept)
        })
        .collect()
}

fn crates() -> Vec<Crate> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut library = Vec::new();
    let mut binary = Vec::new();
    for path in files {
        let relative = path.strip_prefix(&src).expect("under src").to_path_buf();
        let module = module_of(&relative);
        let in_binary = relative == Path::new("main.rs") || relative.starts_with("cli");
        if in_binary {
            binary.push((path, module));
        } else if !relative.starts_with("bin") {
            library.push((path, module));
        }
    }
    vec![
        load_crate("library", &library),
        load_crate("binary", &binary),
    ]
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    for krate in crates() {
        let graph = top_level(&krate);
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "{}: top-level modules import each other in a loop (a module and its descendants \
             counted as one):{}",
            krate.name,
            describe(&found, &graph)
        );
    }
}

#[test]
fn files_have_no_import_cycle() {
    for krate in crates() {
        let graph = file_level(&krate);
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "{}: module files import each other in a loop (edges from a module to its own \
             descendants not counted):{}",
            krate.name,
            describe(&found, &graph)
        );
    }
}

/// The scanner itself: comments and strings are not imports, use trees are expanded, and
/// `super` inside an inline module means the file's module.
#[test]
fn scanner_reads_paths_the_way_rustc_does() {
    let source = r##"
        // use crate::commented::Out;
        /* crate::block /* nested crate::deeper */ still::comment */
        use crate::a::{b::{C, d}, self, e::*};
        use super::sibling::Thing;
        const S: &str = "crate::in_string::X";
        const R: &str = r#"crate::in_raw::X"#;
        fn f<'a>(x: &'a str) -> char { let c = '"'; crate::called::g(); c }
        mod tests { use super::*; use super::super::up::Z; }
    "##;
    let module: ModPath = vec!["top".into(), "here".into()];
    let mut found: Vec<String> = absolute_paths(&tokens(source), &module)
        .iter()
        .map(|p| p.join("::"))
        .collect();
    found.sort();
    let mut expected = vec![
        "a::b::C",
        "a::b::d",
        "a",
        "a::e",
        "top::sibling::Thing",
        "called::g",
        "top::here",
        "top::up::Z",
    ];
    expected.sort();
    assert_eq!(found, expected);

    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let m = |s: &str| -> ModPath { s.split("::").map(String::from).collect() };
    edges.insert(m("x"), [m("y")].into());
    edges.insert(m("y"), [m("z")].into());
    edges.insert(m("z"), [m("x")].into());
    edges.insert(m("w"), [m("x")].into());
    let found = cycles(&edges);
    assert_eq!(found, vec![vec![m("x"), m("y"), m("z")]]);
    let text = describe(&found, &edges);
    assert!(
        text.contains("cycle: x, y, z") && text.contains("z imports x"),
        "{text}"
    );
}

//! The structure the code keeps: `decide` is the pure core (it imports nothing of the shell and
//! does no IO), every layer imports only layers below it, and no source file imports itself
//! back through others (no import circle). Read from the source's `use` items and `crate::`,
//! `super::` paths; test code (`#[cfg(test)]` items, `tests` modules) is left out. And no
//! source file is over 600 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crate's top-level modules, lowest first: a module may import its own layer and those
/// before it. `decide` sees only the CRD types; the shell's parts come after it.
const LAYERS: &[&[&str]] = &[
    &["crd"],
    &["decide"],
    &["fence", "metrics", "telemetry"],
    &["outbound", "budget", "client"],
    &["controller", "server"],
    &["cli"],
];

/// What the pure core must not name: the shell's modules, and the crates that do IO.
const NOT_IN_DECIDE: &[&str] = &[
    "crate::controller",
    "crate::outbound",
    "crate::budget",
    "crate::client",
    "crate::server",
    "crate::fence",
    "crate::telemetry",
    "crate::metrics",
    "crate::cli",
    "tokio::",
    "reqwest::",
    "kube::Api",
    "kube::Client",
    "kube::runtime",
    "kube_runtime",
    "std::fs",
    "std::net::TcpStream",
    "std::thread::sleep",
    "SystemTime::now",
    "Timestamp::now",
    "Instant::now",
];

type Module = Vec<String>;

struct Source {
    file: PathBuf,
    module: Module,
    /// The text with comments and test items taken out.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let rel = file.strip_prefix(&root).ok()?.with_extension("");
            let mut module: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            // The binary, and test code: `tests` modules, `*_tests.rs`, the unit tests' `testing`.
            let test_code = module.iter().any(|s| s.ends_with("tests")) || module == ["testing"];
            if module == ["main"] || test_code {
                return None;
            }
            if module.last().is_some_and(|l| l == "mod" || l == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&file).ok()?;
            Some(Source {
                code: without_tests_and_comments(&text),
                file,
                module,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `text` outside comments and outside every item marked `#[cfg(test)]`.
fn without_tests_and_comments(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item: to its `;` at depth 0, or to the brace that closes it.
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                for c in item.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if (opened && depth <= 0) || (!opened && item.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        let code = line.split(" //").next().unwrap_or(line);
        kept.push_str(code);
        kept.push('\n');
    }
    kept
}

/// Every path the code names: each `use` item expanded (`a::{b, c::d}` is `a::b`, `a::c::d`),
/// and each `crate::…` or `super::…` path written inline.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = find_use(rest) {
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        expand(&[], &after[..end], &mut out);
        rest = &after[end..];
    }
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect());
        }
    }
    out
}

/// Where the next `use` item's path begins: a line that starts one (as rustfmt writes them).
fn find_use(code: &str) -> Option<usize> {
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let item = trimmed
            .strip_prefix("pub ")
            .or_else(|| trimmed.strip_prefix("pub(crate) "))
            .or_else(|| trimmed.strip_prefix("pub(super) "))
            .unwrap_or(trimmed);
        if item.starts_with("use ") {
            return Some(offset + (line.len() - item.len()) + 4);
        }
        offset += line.len();
    }
    None
}

/// Expands one use tree under `prefix` into whole paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut base = prefix.to_vec();
        base.extend(segments(&tree[..open]));
        let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        for part in split_top(inner) {
            expand(&base, part, out);
        }
        return;
    }
    let name = tree.split(" as ").next().unwrap_or(tree);
    let mut path = prefix.to_vec();
    path.extend(segments(name).filter(|s| s != "self" || prefix.is_empty()));
    out.push(path);
}

fn segments(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "*")
        .map(str::to_owned)
}

/// `a, b::{c, d}, e` split at the commas outside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The module a path names, as deep as a module file exists; `None` for another crate's or an
/// item of this module.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let (mut base, rest): (Module, &[String]) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let supers = path.iter().take_while(|s| *s == "super").count();
            let mut base = from.clone();
            for _ in 0..supers {
                base.pop();
            }
            (base, &path[supers..])
        }
        Some(first) => {
            let mut child = from.clone();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None;
            }
            (from.clone(), path)
        }
        None => return None,
    };
    let mut deepest = base.clone();
    for segment in rest {
        base.push(segment.clone());
        if modules.contains(&base) {
            deepest = base.clone();
        } else {
            break;
        }
    }
    Some(deepest)
}

/// Which file imports which: a module's own children are its parts, not its imports.
fn graph(sources: &[Source]) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut graph = BTreeMap::new();
    for s in sources {
        let targets: &mut BTreeSet<Module> = graph.entry(s.module.clone()).or_default();
        for path in paths(&s.code) {
            if let Some(target) = resolve(&s.module, &path, &modules)
                && !target.starts_with(&s.module)
            {
                targets.insert(target);
            }
        }
    }
    graph
}

fn shown(m: &Module) -> String {
    if m.is_empty() { "crate".into() } else { m.join("::") }
}

#[test]
fn the_pure_core_names_nothing_of_the_shell_and_does_no_io() {
    let mut found = Vec::new();
    for s in sources()
        .iter()
        .filter(|s| s.module.first().is_some_and(|m| m == "decide"))
    {
        for line in s.code.lines() {
            for named in NOT_IN_DECIDE {
                if line.contains(named) {
                    found.push(format!("{}: {named}: {}", s.file.display(), line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "decide must stay pure:\n{}", found.join("\n"));
}

#[test]
fn every_module_imports_only_its_layer_and_those_below() {
    let layer = |m: &Module| {
        let top = m.first().map(String::as_str).unwrap_or_default();
        LAYERS.iter().position(|l| l.contains(&top))
    };
    let sources = sources();
    let mut unplaced: Vec<String> = sources
        .iter()
        .filter(|s| !s.module.is_empty() && layer(&s.module).is_none())
        .map(|s| shown(&s.module))
        .collect();
    unplaced.dedup();
    assert!(unplaced.is_empty(), "put these in a layer: {unplaced:?}");
    let mut upward = Vec::new();
    for (from, targets) in graph(&sources) {
        for to in targets {
            if let (Some(a), Some(b)) = (layer(&from), layer(&to))
                && b > a
            {
                upward.push(format!("{} imports {}", shown(&from), shown(&to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports up the layers:\n{}", upward.join("\n"));
}

#[test]
fn no_file_imports_itself_back_through_others() {
    let graph = graph(&sources());
    // A file is in a circle when it can reach itself: a search from each file.
    let mut circles = BTreeSet::new();
    for start in graph.keys() {
        let mut came_from: BTreeMap<&Module, &Module> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(at) = queue.pop_front() {
            for next in graph.get(at).into_iter().flatten() {
                if next == start {
                    let mut circle = vec![at];
                    let mut step = at;
                    while step != start {
                        step = came_from[step];
                        circle.push(step);
                    }
                    circle.reverse();
                    circle.push(start);
                    circles.insert(circle.iter().map(|m| shown(m)).collect::<Vec<_>>().join(" -> "));
                    queue.clear();
                    break;
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next, at);
                    queue.push_back(next);
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The reading itself: a test that found no imports would pass whatever the code did.
#[test]
fn the_reading_finds_the_imports_it_judges() {
    let graph = graph(&sources());
    let decide_plan = vec!["decide".to_owned(), "plan".to_owned()];
    let edges: usize = graph.values().map(BTreeSet::len).sum();
    assert!(edges > 100, "only {edges} imports read");
    assert!(
        graph
            .get(&vec!["controller".to_owned(), "reconcile".to_owned()])
            .is_some_and(|t| t.iter().any(|m| m.starts_with(&["decide".to_owned()]))),
        "the shell's reconcile reads decide"
    );
    assert!(graph.contains_key(&decide_plan));
    let mut out = Vec::new();
    expand(&[], "crate::decide::{plan::{self, Input}, token}", &mut out);
    assert_eq!(
        out,
        [
            vec!["crate", "decide", "plan"],
            vec!["crate", "decide", "plan", "Input"],
            vec!["crate", "decide", "token"]
        ]
    );
    let code = without_tests_and_comments(
        "use a::b;\n// use c::d;\n#[cfg(test)]\nmod tests {\n    use e::f;\n}\nfn g() { crate::h::i(); }\n",
    );
    assert_eq!(
        paths(&code),
        [vec!["a", "b"], vec!["crate", "h", "i"]],
        "comments and test items are not read"
    );
}

/// A file a reader can hold in mind: none over 600 lines, tests and the kit included.
#[test]
fn no_source_file_is_over_600_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        walk(&root.join(dir), &mut files);
    }
    assert!(files.len() > 100, "only {} files found", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > 600).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern:\n{}", long.join("\n"));
}

//! The architecture where the compiler cannot hold it: drawn from the code's
//! own imports (parsed with syn), no circle between folders of one crate (so
//! no import runs back up; between crates, cargo refuses circles) and no
//! product function over 150 lines (one runner for child processes:
//! tests/one_runner.rs). `cargo test -p xtask --test architecture -- --nocapture` prints
//! the figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The longest product function allowed, in lines from `fn` to its closing brace.
const LONGEST_FUNCTION: usize = 150;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// One crate's sources: its name and `src/` folder.
struct Crate {
    name: String,
    src: PathBuf,
}

fn crates() -> Vec<Crate> {
    let root = workspace_root();
    let mut found = vec![Crate {
        name: "xtask".into(),
        src: root.join("xtask/src"),
    }];
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        let mut dirs: Vec<PathBuf> = entries
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.join("src").is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            found.push(Crate {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                src: dir.join("src"),
            });
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file (`vm/guest/checks.rs` → `vm::guest::checks`,
/// `vm/mod.rs` → `vm`, `lib.rs` → ``).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") || !parts.is_empty() && stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The folder a file belongs to, as the newcomer sees it: a file at the top
/// of `src/` is a room of its own (`results.rs` → `results`), a file inside a
/// folder belongs to that folder (`vm/guest/checks.rs` → `vm::guest`), and
/// `setup.rs` beside `setup/` is that folder's face (`setup`).
fn folder_of(src: &Path, file: &Path) -> String {
    let module = module_of(src, file);
    let is_face = file.file_name().is_some_and(|n| n == "mod.rs")
        || file.with_extension("").is_dir()
        || module.len() <= 1;
    let folder = if is_face {
        &module[..]
    } else {
        &module[..module.len() - 1]
    };
    folder.join("::")
}

/// Paths a file names that start in its own crate (`crate::…`, `super::…`),
/// resolved to module paths; tests (`#[cfg(test)]`) are left out.
struct Imports<'a> {
    module: &'a [String],
    found: Vec<Vec<String>>,
}

impl Imports<'_> {
    fn resolve(&mut self, segments: Vec<String>) {
        let Some(first) = segments.first() else {
            return;
        };
        let absolute = match first.as_str() {
            "crate" => segments[1..].to_vec(),
            "super" => {
                // The module path of `mod.rs` is its folder's, so one
                // `super` is one step up for every kind of file.
                let mut base = self.module.to_vec();
                let mut rest = &segments[..];
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.extend(rest.iter().cloned());
                base
            }
            _ => return,
        };
        self.found.push(absolute);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => {
                let mut full = prefix.clone();
                full.push(name.ident.to_string());
                self.resolve(full);
            }
            syn::UseTree::Rename(rename) => {
                let mut full = prefix.clone();
                full.push(rename.ident.to_string());
                self.resolve(full);
            }
            syn::UseTree::Glob(_) => self.resolve(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        (attr.path().is_ident("cfg") || attr.path().is_ident("test"))
            && (attr.path().is_ident("test")
                || attr
                    .meta
                    .require_list()
                    .is_ok_and(|list| list.tokens.to_string() == "test"))
    })
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test_only(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }
    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(segments);
        syn::visit::visit_path(self, path);
    }
}

/// Product functions and their length in lines (fn keyword to closing brace).
struct Functions {
    found: Vec<(usize, String)>,
    owner: String,
}

impl Functions {
    /// Records a product function's length, from `fn` to its closing brace.
    fn record(
        &mut self,
        attrs: &[syn::Attribute],
        sig: &syn::Signature,
        block: &syn::Block,
    ) -> bool {
        if is_test_only(attrs) {
            return false;
        }
        let lines = block.brace_token.span.close().end().line + 1 - sig.fn_token.span.start().line;
        self.found
            .push((lines, format!("{}::{}", self.owner, sig.ident)));
        true
    }
}

impl<'ast> Visit<'ast> for Functions {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if self.record(&item.attrs, &item.sig, &item.block) {
            syn::visit::visit_item_fn(self, item);
        }
    }
    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if self.record(&item.attrs, &item.sig, &item.block) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }
}

struct Source {
    krate: String,
    path: PathBuf,
    module: Vec<String>,
    folder: String,
    syntax: syn::File,
}

/// Module paths a file declares test-only (`#[cfg(test)] mod tests;`): their
/// files are tests, not product code.
fn test_modules(module: &[String], syntax: &syn::File) -> Vec<Vec<String>> {
    syntax
        .items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if m.content.is_none() && is_test_only(&m.attrs) => {
                let mut path = module.to_vec();
                path.push(m.ident.to_string());
                Some(path)
            }
            _ => None,
        })
        .collect()
}

fn sources() -> Vec<Source> {
    let mut all = product_and_test_sources();
    let tests: Vec<(String, Vec<String>)> = all
        .iter()
        .flat_map(|s| {
            test_modules(&s.module, &s.syntax)
                .into_iter()
                .map(|m| (s.krate.clone(), m))
        })
        .collect();
    all.retain(|s| {
        !tests
            .iter()
            .any(|(krate, m)| *krate == s.krate && s.module.starts_with(m))
    });
    all
}

fn product_and_test_sources() -> Vec<Source> {
    let root = workspace_root();
    let mut all = Vec::new();
    for krate in crates() {
        let mut files = Vec::new();
        rust_files(&krate.src, &mut files);
        for path in files {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let syntax = syn::parse_file(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            all.push(Source {
                module: module_of(&krate.src, &path),
                folder: folder_of(&krate.src, &path),
                krate: krate.name.clone(),
                path: path.strip_prefix(&root).unwrap_or(&path).to_path_buf(),
                syntax,
            });
        }
    }
    all
}

/// Imports between files of one crate: (crate, from file, to file).
type FileEdges = BTreeSet<(String, String, String)>;

fn file_edges(sources: &[Source]) -> FileEdges {
    let mut edges = FileEdges::new();
    for source in sources {
        let mut imports = Imports {
            module: &source.module,
            found: Vec::new(),
        };
        imports.visit_file(&source.syntax);
        for path in imports.found {
            // The longest prefix of the path that is a file of this crate.
            let target = (1..=path.len()).rev().find_map(|n| {
                sources
                    .iter()
                    .find(|s| s.krate == source.krate && s.module[..] == path[..n])
            });
            if let Some(target) = target.filter(|t| t.path != source.path) {
                edges.insert((
                    source.krate.clone(),
                    source.path.display().to_string(),
                    target.path.display().to_string(),
                ));
            }
        }
    }
    edges
}

/// Strongly connected sets of more than one node in a directed graph.
fn circles(edges: &BTreeSet<(String, String)>) -> Vec<BTreeSet<String>> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    let reach: BTreeMap<&str, BTreeSet<&str>> = graph
        .keys()
        .map(|&start| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start];
            while let Some(node) = stack.pop() {
                for &next in &graph[node] {
                    if seen.insert(next) {
                        stack.push(next);
                    }
                }
            }
            (start, seen)
        })
        .collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for &node in graph.keys() {
        if done.contains(node) {
            continue;
        }
        let members: BTreeSet<String> = graph
            .keys()
            .filter(|&&other| {
                other == node || reach[node].contains(other) && reach[other].contains(node)
            })
            .map(|s| s.to_string())
            .collect();
        done.extend(members.iter().cloned());
        if members.len() > 1 {
            found.push(members);
        }
    }
    found
}

/// The top-level room of a file: its first module (`vm/guest/checks.rs` → `vm`).
fn room_of(module: &str, sources: &[Source], krate: &str) -> String {
    sources
        .iter()
        .find(|s| s.krate == krate && s.path.display().to_string() == module)
        .and_then(|s| s.module.first().cloned())
        .unwrap_or_default()
}

#[test]
fn imports_run_one_way() {
    let sources = sources();
    let edges = file_edges(&sources);
    let folder = |path: &str| {
        sources
            .iter()
            .find(|s| s.path.display().to_string() == path)
            .map(|s| format!("{}:{}", s.krate, s.folder))
            .unwrap_or_default()
    };
    let mut report = String::new();

    // Rooms: the top-level modules of each crate (as a newcomer opens them).
    let mut room_edges: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for (krate, from, to) in &edges {
        let (a, b) = (room_of(from, &sources, krate), room_of(to, &sources, krate));
        if a != b && !a.is_empty() && !b.is_empty() {
            room_edges
                .entry((format!("{krate}:{a}"), format!("{krate}:{b}")))
                .or_default()
                .push((from.clone(), to.clone()));
        }
    }
    let room_circles = circles(&room_edges.keys().cloned().collect());
    for circle in &room_circles {
        report.push_str(&format!(
            "top-level modules importing each other in a loop (an import runs back up): {}\n",
            circle.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        for ((a, b), files) in &room_edges {
            if circle.contains(a) && circle.contains(b) {
                for (from, to) in files {
                    report.push_str(&format!("  {a} -> {b}: {from} -> {to}\n"));
                }
            }
        }
    }

    // Files: a loop of imports may stay inside one folder, never cross one.
    let plain: BTreeSet<(String, String)> = edges
        .iter()
        .map(|(_, from, to)| (from.clone(), to.clone()))
        .collect();
    let file_circles: Vec<_> = circles(&plain)
        .into_iter()
        .filter(|c| c.iter().map(|f| folder(f)).collect::<BTreeSet<_>>().len() > 1)
        .collect();
    for circle in &file_circles {
        report.push_str(&format!(
            "files of different folders importing each other in a loop: {}\n",
            circle.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        for (from, to) in &plain {
            if circle.contains(from) && circle.contains(to) {
                report.push_str(&format!("  {from} -> {to}\n"));
            }
        }
    }

    let rooms: BTreeSet<_> = room_edges.keys().flat_map(|(a, b)| [a, b]).collect();
    println!(
        "{} crates, {} files, {} top-level modules, {} arrows between them; \
         circles: {} between top-level modules, {} across folders",
        crates().len(),
        sources.len(),
        rooms.len(),
        room_edges.len(),
        room_circles.len(),
        file_circles.len()
    );
    println!("{report}");
    assert!(
        room_circles.is_empty() && file_circles.is_empty(),
        "move the item both sides use to a module below both:\n{report}"
    );
}

#[test]
fn no_product_function_over_the_limit() {
    let mut all = Vec::new();
    for source in sources() {
        let mut functions = Functions {
            found: Vec::new(),
            owner: source.path.display().to_string(),
        };
        functions.visit_file(&source.syntax);
        all.extend(functions.found);
    }
    all.sort_by(|a, b| b.cmp(a));
    println!("{} product functions; the longest:", all.len());
    for (lines, name) in all.iter().take(5) {
        println!("  {lines:4} {name}");
    }
    let over: Vec<String> = all
        .iter()
        .filter(|(lines, _)| *lines > LONGEST_FUNCTION)
        .map(|(lines, name)| format!("{name}: {lines} lines"))
        .collect();
    assert!(
        over.is_empty(),
        "product functions over {LONGEST_FUNCTION} lines; split them into named steps:\n{}",
        over.join("\n")
    );
}

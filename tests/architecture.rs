//! The shape of `src/`, checked on every `cargo test`: no import circle between the library's files,
//! no import that runs up a floor (data flows gate file → runner → backend → measurement → stats →
//! verdict → report), and no file over 600 lines without a one-line reason at its top.
//!
//! Method: the module tree is followed from `src/lib.rs` through its `mod` declarations (test-only
//! modules, `#[cfg(test)]`, left out), each file is parsed with `syn`, and every path it names —
//! `use` trees and paths in types and expressions — is resolved (`crate::`, `super::`, `self::`, a
//! child module's name) to the deepest library module that holds it. Each such reference is an edge
//! between two files. A `pub use` of a module's own descendant is a re-export (the facade of a
//! folder), not a dependency. Paths written inside macro calls are not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The floors of the library, lowest first. A module may import its own floor and the floors below;
/// an import of a higher floor is an upward import. Every top-level module must be listed here.
const FLOORS: &[&[&str]] = &[
    // Ground: facts and arithmetic that know nothing of the rest.
    &["error", "host", "id", "jsonl", "stats", "progress", "cost"],
    // Pinned artifacts and the model formats built from them.
    &["pins", "assets", "model", "workload"],
    // Engines and sensors.
    &["backend", "energy"],
    // What a run measures of an engine.
    &["accuracy", "roofline", "measure", "manifest"],
    // What is stored between runs.
    &["baseline"],
    // Claims and their verdicts; the paired comparison the regression gate runs.
    &["paired", "gate"],
    // Gate file → trials → verdicts → the run directory's records.
    &["runner", "record"],
    // Run directory → decision card.
    &["report"],
    // The commands.
    &["cli", "doctor"],
];

/// A line in a file's first lines that says why it may be long.
const LONG_FILE_MARK: &str = "Over 600 lines";
const MAX_LINES: usize = 600;

type ModPath = Vec<String>;

struct ModFile {
    path: ModPath,
    file: PathBuf,
    /// Names of the child modules it declares (test-only ones left out).
    children: BTreeSet<String>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Every library file reached from `lib.rs` through `mod name;` declarations.
fn module_tree() -> Vec<ModFile> {
    let mut out = Vec::new();
    let mut queue = vec![(Vec::new(), src_dir().join("lib.rs"))];
    while let Some((path, file)) = queue.pop() {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let ast =
            syn::parse_file(&text).unwrap_or_else(|e| panic!("parse {}: {e}", file.display()));
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let dir = file.parent().unwrap_or(Path::new("."));
        // Children of `a.rs` live in `a/`; children of `lib.rs`/`mod.rs` beside it.
        let child_dir = if stem == "lib" || stem == "mod" {
            dir.to_path_buf()
        } else {
            dir.join(stem)
        };
        let mut children = BTreeSet::new();
        for item in &ast.items {
            let syn::Item::Mod(m) = item else { continue };
            if is_cfg_test(&m.attrs) || m.content.is_some() {
                continue;
            }
            let name = m.ident.to_string();
            let child_file = match path_attr(&m.attrs) {
                Some(p) => dir.join(p),
                None if child_dir.join(format!("{name}.rs")).exists() => {
                    child_dir.join(format!("{name}.rs"))
                }
                None => child_dir.join(&name).join("mod.rs"),
            };
            let mut child_path = path.clone();
            child_path.push(name.clone());
            children.insert(name);
            queue.push((child_path, child_file));
        }
        out.push(ModFile {
            path,
            file,
            children,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A path named in a file, as written, and whether it is a `pub use`.
struct Named {
    segments: Vec<String>,
    reexport: bool,
}

#[derive(Default)]
struct Collector {
    named: Vec<Named>,
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut v = prefix.clone();
            if n.ident != "self" {
                v.push(n.ident.to_string());
            }
            out.push(v);
        }
        syn::UseTree::Rename(r) => {
            let mut v = prefix.clone();
            if r.ident != "self" {
                v.push(r.ident.to_string());
            }
            out.push(v);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_paths(t, prefix, out);
            }
        }
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if is_cfg_test(item_attrs(item)) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut paths = Vec::new();
        use_paths(&u.tree, &mut Vec::new(), &mut paths);
        let reexport = !matches!(u.vis, syn::Visibility::Inherited);
        self.named.extend(
            paths
                .into_iter()
                .map(|segments| Named { segments, reexport }),
        );
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.named.push(Named {
            segments,
            reexport: false,
        });
        syn::visit::visit_path(self, p);
    }
}

/// The library module a path written in module `here` refers to, if it is one of ours.
fn resolve(here: &ModFile, segments: &[String], modules: &BTreeSet<ModPath>) -> Option<ModPath> {
    let first = segments.first()?;
    let (mut abs, rest): (ModPath, &[String]) = match first.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (here.path.clone(), &segments[1..]),
        "super" => {
            let mut base = here.path.clone();
            let mut i = 0;
            while segments.get(i).is_some_and(|s| s == "super") {
                base.pop();
                i += 1;
            }
            (base, &segments[i..])
        }
        name if here.children.contains(name) => (here.path.clone(), segments),
        _ => return None,
    };
    abs.extend(rest.iter().cloned());
    // The deepest module that is a prefix of the path.
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|p| modules.contains(p))
}

struct Edge {
    from: ModPath,
    to: ModPath,
    /// One path that makes the edge, for the message.
    via: String,
}

fn edges(tree: &[ModFile]) -> Vec<Edge> {
    let modules: BTreeSet<ModPath> = tree.iter().map(|m| m.path.clone()).collect();
    let mut out: BTreeMap<(ModPath, ModPath), String> = BTreeMap::new();
    for m in tree {
        let text = std::fs::read_to_string(&m.file).expect("read");
        let ast = syn::parse_file(&text).expect("parse");
        let mut c = Collector::default();
        c.visit_file(&ast);
        for n in c.named {
            let Some(to) = resolve(m, &n.segments, &modules) else {
                continue;
            };
            if to == m.path || to.is_empty() {
                continue;
            }
            // A folder's facade re-exporting its own descendants.
            if n.reexport && to.starts_with(&m.path) {
                continue;
            }
            out.entry((m.path.clone(), to))
                .or_insert_with(|| n.segments.join("::"));
        }
    }
    out.into_iter()
        .map(|((from, to), via)| Edge { from, to, via })
        .collect()
}

fn name(p: &ModPath) -> String {
    if p.is_empty() {
        "crate".into()
    } else {
        p.join("::")
    }
}

/// Strongly connected components with more than one node (Tarjan).
fn circles(nodes: &[ModPath], edges: &[Edge]) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        adj: BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    fn connect<'a>(s: &mut State<'a>, v: &'a ModPath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.adj.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                connect(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut adj: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for e in edges {
        adj.entry(&e.from).or_default().push(&e.to);
    }
    let mut s = State {
        adj,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v) {
            connect(&mut s, v);
        }
    }
    s.out
}

fn floor_of(top: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&top))
}

/// The circles of a levelized graph: at every folder, its direct children (each with everything
/// below it) are the nodes, and a file edge between two of them is an edge. A folder and what is
/// inside it are one unit to the outside, so an edge between a module and its own ancestor (a child
/// using its folder's shared vocabulary) does not count; a circle between two folders does, at the
/// level where they are siblings.
fn levelized_circles(
    tree: &[ModFile],
    edges: &[Edge],
) -> Vec<(ModPath, Vec<ModPath>, Vec<String>)> {
    let mut found = Vec::new();
    for folder in tree.iter().filter(|m| !m.children.is_empty()) {
        let f = &folder.path;
        let depth = f.len();
        let child_of = |m: &ModPath| -> Option<ModPath> {
            (m.len() > depth && m.starts_with(f)).then(|| m[..=depth].to_vec())
        };
        let level: Vec<Edge> = edges
            .iter()
            .filter_map(|e| {
                let (a, b) = (child_of(&e.from)?, child_of(&e.to)?);
                (a != b).then(|| Edge {
                    from: a,
                    to: b,
                    via: format!("{} → {} via `{}`", name(&e.from), name(&e.to), e.via),
                })
            })
            .collect();
        let nodes: Vec<ModPath> = folder
            .children
            .iter()
            .map(|c| [f.clone(), vec![c.clone()]].concat())
            .collect();
        for comp in circles(&nodes, &level) {
            let mut vias: Vec<String> = level
                .iter()
                .filter(|e| comp.contains(&e.from) && comp.contains(&e.to))
                .map(|e| e.via.clone())
                .collect();
            vias.dedup();
            found.push((f.clone(), comp, vias));
        }
    }
    found
}

#[test]
fn no_import_circle() {
    let tree = module_tree();
    let found = levelized_circles(&tree, &edges(&tree));
    let mut msg = String::new();
    for (folder, comp, vias) in &found {
        msg.push_str(&format!(
            "circle in {}: {}\n",
            name(folder),
            comp.iter().map(name).collect::<Vec<_>>().join(", ")
        ));
        for v in vias {
            msg.push_str(&format!("  {v}\n"));
        }
    }
    assert!(
        found.is_empty(),
        "{} import circle(s) in src/ — move the shared type down to a module both can import:\n{msg}",
        found.len()
    );
}

#[test]
fn no_import_runs_up_a_floor() {
    let tree = module_tree();
    let mut unlisted: Vec<String> = tree
        .iter()
        .filter_map(|m| m.path.first())
        .filter(|top| floor_of(top).is_none())
        .cloned()
        .collect();
    unlisted.dedup();
    assert!(
        unlisted.is_empty(),
        "top-level modules missing from FLOORS in tests/architecture.rs: {unlisted:?} — give each its floor"
    );
    let upward: Vec<String> = edges(&tree)
        .iter()
        .filter(|e| {
            let (Some(a), Some(b)) = (e.from.first(), e.to.first()) else {
                return false;
            };
            a != b && floor_of(b) > floor_of(a)
        })
        .map(|e| format!("  {} → {} (via `{}`)", name(&e.from), name(&e.to), e.via))
        .collect();
    assert!(
        upward.is_empty(),
        "{} import(s) run up a floor (see FLOORS in tests/architecture.rs):\n{}",
        upward.len(),
        upward.join("\n")
    );
}

#[test]
fn long_files_say_why() {
    let long: Vec<String> = module_tree()
        .iter()
        .filter_map(|m| {
            let text = std::fs::read_to_string(&m.file).ok()?;
            let lines = text.lines().count();
            let says_why = text.lines().take(5).any(|l| l.contains(LONG_FILE_MARK));
            (lines > MAX_LINES && !says_why)
                .then(|| format!("  {} ({lines} lines)", m.file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a `//! {LONG_FILE_MARK}: <why>` line at the top — split \
         them by job or say why not:\n{}",
        long.join("\n")
    );
}

/// The checker itself: a circle and an upward import planted in a tree of its own are found.
#[test]
fn the_checker_finds_a_planted_circle() {
    let a: ModPath = vec!["gate".into()];
    let b: ModPath = vec!["backend".into()];
    let planted = vec![
        Edge {
            from: a.clone(),
            to: b.clone(),
            via: "crate::backend::Backend".into(),
        },
        Edge {
            from: b.clone(),
            to: a.clone(),
            via: "crate::gate::Verdict".into(),
        },
    ];
    assert_eq!(
        circles(&[a.clone(), b.clone()], &planted),
        vec![vec![b.clone(), a.clone()]]
    );
    let folder = |p: &ModPath, children: &[&str]| ModFile {
        path: p.clone(),
        file: PathBuf::new(),
        children: children.iter().map(|c| c.to_string()).collect(),
    };
    let tree = [
        folder(&vec![], &["backend", "gate"]),
        folder(&a, &[]),
        folder(&b, &[]),
    ];
    assert_eq!(
        levelized_circles(&tree, &planted).len(),
        1,
        "the planted circle, at the crate's level"
    );
    let to_parent = vec![Edge {
        from: vec!["gate".into(), "x".into()],
        to: a.clone(),
        via: "super::median".into(),
    }];
    assert!(
        levelized_circles(&tree, &to_parent).is_empty(),
        "a child using its folder is no circle"
    );
    assert!(
        floor_of("gate") > floor_of("backend"),
        "backend → gate is upward"
    );
    let here = ModFile {
        path: vec!["backend".into(), "ort".into()],
        file: PathBuf::new(),
        children: BTreeSet::new(),
    };
    let modules: BTreeSet<ModPath> = [vec![], b.clone(), here.path.clone()].into_iter().collect();
    let seg = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        resolve(&here, &seg("super::Backend"), &modules),
        Some(b.clone())
    );
    assert_eq!(
        resolve(&here, &seg("crate::backend::ort::X"), &modules),
        Some(here.path.clone())
    );
    assert_eq!(resolve(&here, &seg("ndarray::Array2"), &modules), None);
}

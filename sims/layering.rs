//! The house rules of `ARCHITECTURE.md`, checked: which way imports point,
//! how long a source file may grow, and that the map names every module.
//!
//! A rule here fails on the code, not on a constant: moving a `use` the
//! wrong way, letting a file grow past its limit or adding a module that
//! the map does not name makes `cargo test` fail with the file and line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// No source file grows past this many lines (ARCHITECTURE.md, "Code
/// map": aim for 600, never over 800).
const SOURCE_LINES_MAX: usize = 800;

/// The modules of `src/lib.rs` in layers, from the inside out
/// (ARCHITECTURE.md, "Which way imports point"). A module may import only
/// modules of lower layers; within a layer only the leaves import each
/// other. Every module of `lib.rs` must have a layer.
const LAYERS: &[&[&str]] = &[
    &[
        "units", "ids", "user", "auth", "checksum", "payload", "buggify", "coverage", "outcome",
    ],
    &["env", "profile"],
    &["trace", "wire"],
    &["admission"],
    &["chunk_api", "drive", "tus"],
    &["client", "backend"],
    &["checks"],
    &["sim", "real"],
    &["diagnose", "zoo_report", "bench_report"],
    &["cli"],
];

/// The layer whose modules may import each other.
const LEAF_LAYER: usize = 0;

/// Imports of a lower layer that are still wrong: the client speaks only
/// the chunk API, never the drive's protocol.
const ALSO_FORBIDDEN: &[(&str, &str)] = &[("client", "drive")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// Whether `from` may import `to`.
fn may_import(from: &str, to: &str) -> bool {
    let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
        return false;
    };
    let ordered = b < a || (a == b && (a == LEAF_LAYER || from == to));
    ordered && !ALSO_FORBIDDEN.contains(&(from, to))
}

/// The modules `src/lib.rs` declares.
fn lib_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file at or under `path`, in a fixed order.
fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .collect();
    entries.sort();
    entries
        .iter()
        .flat_map(|p| match p.extension() {
            Some(ext) if ext == "rs" => vec![p.clone()],
            _ if p.is_dir() => rust_files(p),
            _ => vec![],
        })
        .collect()
}

/// The top-level modules a line of code names through `crate::`, grouped
/// imports (`crate::{a::X, b}`) included. Comments are not code: a doc
/// link to an outer module is not an import.
fn crate_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            found.extend(inner.split(',').map(|item| first_segment(item.trim())));
        } else {
            found.push(first_segment(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// This is a regression test that ensures imports keep pointing inward
/// (env ← admission ← backend/drive/client ← sim ← cli): issue 9 found the
/// drive calling into the backend, checks taking a type from the runner and
/// half the crate importing the CLI.
#[test]
fn imports_point_inward() {
    let mut broken = Vec::new();
    for module in lib_modules() {
        assert!(
            layer_of(&module).is_some(),
            "{module} has no layer in LAYERS"
        );
        let files = [src().join(format!("{module}.rs")), src().join(&module)];
        for file in files
            .iter()
            .filter(|p| p.exists())
            .flat_map(|p| rust_files(p))
        {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            for (n, line) in text.lines().enumerate() {
                for to in crate_modules(line) {
                    if !may_import(&module, &to) {
                        broken.push(format!(
                            "{}:{}: {module} imports {to}",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports pointing outward:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layers_forbid_what_the_map_forbids() {
    assert!(!may_import("drive", "backend"));
    assert!(!may_import("admission", "sim"));
    assert!(!may_import("checks", "sim"));
    assert!(!may_import("real", "cli"));
    assert!(!may_import("client", "drive"));
    assert!(!may_import("sim", "real"));
    assert!(may_import("backend", "drive"));
    assert!(may_import("payload", "checksum"));
    assert!(may_import("cli", "sim"));
}

#[test]
fn the_import_scanner_sees_plain_and_grouped_paths_but_not_comments() {
    assert_eq!(crate_modules("use crate::sim::run;"), ["sim"]);
    assert_eq!(
        crate_modules("use crate::{env::Clock, cli};"),
        ["env", "cli"]
    );
    assert_eq!(
        crate_modules("let x = crate::backend::f(); // crate::cli"),
        ["backend"]
    );
    assert!(crate_modules("//! see [`zoo`](crate::checks::zoo)").is_empty());
}

#[test]
fn no_source_file_outgrows_its_limit() {
    let long: Vec<String> = rust_files(&src())
        .into_iter()
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file).ok()?.lines().count();
            (lines > SOURCE_LINES_MAX).then(|| format!("{}: {lines} lines", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {SOURCE_LINES_MAX} lines: {long:?}"
    );
}

/// ARCHITECTURE.md is the map: every module `lib.rs` declares appears in
/// its code map as `` `name/` `` or `` `name.rs` ``.
#[test]
fn the_map_names_every_top_level_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let modules = lib_modules();
    assert!(modules.len() > 10, "lib.rs declares only {modules:?}");
    let missing: Vec<&String> = modules
        .iter()
        .filter(|m| !map.contains(&format!("`{m}/`")) && !map.contains(&format!("`{m}.rs`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not name {missing:?}"
    );
}

//! The widget-folder conventions, checked on the source tree: every folder under `widgets/`
//! that holds a `mod.rs` is a widget and must have
//!
//! - a `README.md`;
//! - a `testdata/` folder with at least one fixture (every widget reads something on Linux
//!   through a parser, so every widget has captured outputs to test it on);
//! - a `pub mod <folder>;` and a `&<folder>::SPEC` entry in `ALL` (`lib.rs`);
//! - a row in the root `README.md`'s `## Widgets` table for its registry name.

use std::path::Path;

use crate::ALL;

/// The text of `lib.rs`'s `ALL` definition.
fn all_block(lib: &str) -> &str {
    let start = lib.find("pub static ALL").unwrap_or(lib.len());
    let rest = &lib[start..];
    &rest[..rest.find("];").unwrap_or(rest.len())]
}

/// The `## Widgets` section of the root README (up to the next `## ` heading).
fn widgets_section(readme: &str) -> &str {
    let Some(start) = readme.find("\n## Widgets\n") else { return "" };
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// Every violation found under `widgets_dir`, given the texts of `lib.rs` and the root
/// README and the registry names; empty when the conventions hold.
fn violations(widgets_dir: &Path, lib: &str, readme: &str, registry: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let all = all_block(lib);
    let table = widgets_section(readme);
    if table.is_empty() {
        found.push("root README.md has no `## Widgets` section".to_string());
    }
    let mut dirs: Vec<_> = std::fs::read_dir(widgets_dir)
        .map(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("mod.rs").is_file()).collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !dir.join("README.md").is_file() {
            found.push(format!("{name}/: no README.md"));
        }
        let fixtures = std::fs::read_dir(dir.join("testdata")).map(|d| d.count()).unwrap_or(0);
        if fixtures == 0 {
            found.push(format!("{name}/: no testdata/ with fixtures"));
        }
        if !lib.contains(&format!("pub mod {name};")) {
            found.push(format!("{name}/: no `pub mod {name};` in lib.rs"));
        }
        if !all.contains(&format!("&{name}::SPEC")) {
            found.push(format!("{name}/: `{name}::SPEC` is not in ALL"));
        }
    }
    for spec in registry {
        if !table.contains(&format!("| `{spec}` |")) {
            found.push(format!("widget `{spec}`: no row in the root README.md's Widgets table"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_widget_folder_follows_the_conventions() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lib = read(&dir.join("lib.rs"));
        let readme = read(&dir.join("../README.md"));
        let registry: Vec<&str> = ALL.iter().map(|spec| spec.name).collect();
        let found = violations(dir, &lib, &readme, &registry);
        assert!(found.is_empty(), "widget conventions broken:\n{}", found.join("\n"));
    }

    #[test]
    fn violations_are_detected() {
        let root = std::env::temp_dir().join(format!("fleet-conventions-{}", std::process::id()));
        let make = |path: &str, text: &str| {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap_or(&root)).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        make("good/mod.rs", "");
        make("good/README.md", "# good");
        make("good/testdata/x.txt", "# source: x\n\nx\n");
        make("bare/mod.rs", "");
        make("cpu/mod.rs", "");
        make("cpu/README.md", "# cpu");
        make("notawidget/helper.txt", "");
        let lib = "pub mod good;\npub mod cpu;\npub static ALL: &[&WidgetSpec] = &[&good::SPEC];\n";
        let readme = "# x\n\n## Widgets\n\n| widget |\n|---|\n| `good` | a |\n\n## Next\n\n| `cpu` | b |\n";
        let mut found = violations(&root, lib, readme, &["good", "cpu"]);
        found.sort();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            found,
            vec![
                "bare/: `bare::SPEC` is not in ALL",
                "bare/: no README.md",
                "bare/: no `pub mod bare;` in lib.rs",
                "bare/: no testdata/ with fixtures",
                "cpu/: `cpu::SPEC` is not in ALL",
                "cpu/: no testdata/ with fixtures",
                "widget `cpu`: no row in the root README.md's Widgets table",
            ]
        );
    }
}

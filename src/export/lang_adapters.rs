//! Which language adapter belongs to which language: a folder with one AdapterHub adapter
//! folder per language (`adapters/th/adapter_config.json`, ...), or a TOML table
//! `th = "path/to/adapter"` of paths inside the TOML file's folder (relative to it; absolute
//! paths and `..` are refused, so a map from elsewhere cannot point the exporter outside).
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Language code -> adapter directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LangAdapters {
    pub source: PathBuf,
    pub adapters: BTreeMap<String, PathBuf>,
}

impl LangAdapters {
    /// Reads the mapping from a folder of adapter folders or from a `.toml` file.
    pub fn load(source: &Path) -> Result<Self> {
        let adapters = if source.is_dir() {
            from_folder(source)?
        } else if source.is_file() {
            from_toml(source)?
        } else {
            bail!("--lang-adapters {}: no such folder or TOML file", source.display());
        };
        if let Some(bad) = adapters.keys().find(|l| !is_language_code(l)) {
            bail!(
                "{}: language `{bad}` is not a usable name (letters, digits, `_` and `-` only; it names the model file)",
                source.display()
            );
        }
        if adapters.is_empty() {
            bail!(
                "{}: no language adapters found (expected sub-folders with adapter_config.json, or a TOML table `th = \"path/to/adapter\"`)",
                source.display()
            );
        }
        Ok(Self { source: source.to_path_buf(), adapters })
    }

    /// The languages of `spec`: `all`, or a comma-separated list such as `th,sw,zh`. A language
    /// without an adapter is an error that lists the available ones.
    pub fn select(&self, spec: &str) -> Result<Vec<(String, PathBuf)>> {
        if spec.trim() == "all" {
            return Ok(self.adapters.iter().map(|(l, p)| (l.clone(), p.clone())).collect());
        }
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for lang in spec.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            let Some(dir) = self.adapters.get(lang) else {
                bail!(
                    "no language adapter for `{lang}` in {}; available: {}",
                    self.source.display(),
                    self.adapters.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            if !out.iter().any(|(l, _)| l == lang) {
                out.push((lang.to_string(), dir.clone()));
            }
        }
        if out.is_empty() {
            bail!("--lang is empty: give languages such as `th,sw` or `all`");
        }
        Ok(out)
    }
}

fn is_language_code(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn from_folder(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.join("adapter_config.json").is_file() {
            let lang = path.file_name().expect("a directory entry has a name").to_string_lossy().into_owned();
            out.insert(lang, path);
        }
    }
    Ok(out)
}

fn from_toml(path: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let text = crate::data::read_text(path)?;
    let table: toml::Table = text.parse().with_context(|| format!("{}: not valid TOML", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = BTreeMap::new();
    for (lang, value) in &table {
        let Some(dir) = value.as_str() else {
            bail!("{}: `{lang}` must be a path string, found {value}", path.display());
        };
        if Path::new(dir).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
            bail!("{}: the adapter of `{lang}`, {dir:?}, is not a path inside this file's folder (absolute paths and `..` are refused)", path.display());
        }
        let dir = base.join(dir);
        if !dir.join("adapter_config.json").is_file() {
            bail!("{}: the adapter of `{lang}`, {}, has no adapter_config.json", path.display(), dir.display());
        }
        out.insert(lang.clone(), dir);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("adapter_config.json"), "{}").unwrap();
    }

    #[test]
    fn folder_and_toml_mappings() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("adapters");
        adapter(&folder.join("th"));
        adapter(&folder.join("sw"));
        std::fs::create_dir_all(folder.join("notes")).unwrap();
        let map = LangAdapters::load(&folder).unwrap();
        assert_eq!(map.adapters.keys().collect::<Vec<_>>(), ["sw", "th"]);
        assert_eq!(map.select("all").unwrap().len(), 2);
        assert_eq!(map.select("th, sw,th").unwrap().iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["th", "sw"]);

        let toml = root.path().join("langs.toml");
        std::fs::write(&toml, "zh = \"adapters/th\"\n").unwrap();
        let map = LangAdapters::load(&toml).unwrap();
        assert_eq!(map.adapters["zh"], root.path().join("adapters/th"));

        std::fs::write(&toml, "\"../evil\" = \"adapters/th\"\n").unwrap();
        let err = LangAdapters::load(&toml).unwrap_err();
        assert!(format!("{err}").contains("not a usable name"), "{err}");
    }

    #[test]
    fn a_missing_language_lists_the_available_ones() {
        let root = tempfile::tempdir().unwrap();
        adapter(&root.path().join("th"));
        adapter(&root.path().join("sw"));
        let err = LangAdapters::load(root.path()).unwrap().select("th,qu").unwrap_err();
        assert!(
            format!("{err}").contains("no language adapter for `qu`") && format!("{err}").contains("available: sw, th"),
            "{err}"
        );
    }
}

